//! Dynamic querying at the origin (after Gnutella's): start narrow and
//! widen only while too few results have arrived. Each stage is a new
//! query (new id, so peers that saw the last one answer again) with a
//! larger hop limit; the search ends when enough results are in, the
//! stages run out, or the deadline passes. Pure: the caller passes `now`
//! and the result count.

use std::time::{Duration, Instant};

use crate::query::{MAX_HOPS, Query, QueryId};

/// One widening step: a hop limit and how long to wait for its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub hops: u8,
    pub wait: Duration,
}

/// The default stages: 2 hops, then the requested limit, then the maximum.
pub fn default_stages(hops: u8) -> Vec<Stage> {
    let hops = hops.clamp(1, MAX_HOPS);
    let mut stages = vec![Stage {
        hops: hops.min(2),
        wait: Duration::from_millis(800),
    }];
    if hops > 2 {
        stages.push(Stage {
            hops,
            wait: Duration::from_secs(2),
        });
    }
    if hops < MAX_HOPS {
        stages.push(Stage {
            hops: MAX_HOPS,
            wait: Duration::from_secs(3),
        });
    }
    stages
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this query (a new stage).
    Send(Query),
    /// Nothing to do before this instant.
    WaitUntil(Instant),
    /// The search is over.
    Done,
}

/// See the module docs.
#[derive(Debug)]
pub struct DynamicQuery {
    base: Query,
    stages: Vec<Stage>,
    next: usize,
    stage_ends: Option<Instant>,
    wanted: usize,
    deadline: Instant,
    ids: Vec<QueryId>,
}

impl DynamicQuery {
    /// `wanted`: results after which no wider stage is started.
    pub fn new(base: Query, stages: Vec<Stage>, wanted: usize, deadline: Instant) -> Self {
        Self {
            base,
            stages,
            next: 0,
            stage_ends: None,
            wanted: wanted.max(1),
            deadline,
            ids: Vec::new(),
        }
    }

    /// Ids of every stage sent so far (results for any of them count).
    pub fn ids(&self) -> &[QueryId] {
        &self.ids
    }

    pub fn poll(&mut self, now: Instant, results: usize) -> Step {
        if now >= self.deadline {
            return Step::Done;
        }
        if let Some(end) = self.stage_ends
            && now < end
            && results < self.wanted
        {
            return Step::WaitUntil(end.min(self.deadline));
        }
        if results >= self.wanted && self.next > 0 {
            // Enough: let the last stage's results trickle in until its end.
            return match self.stage_ends {
                Some(end) if now < end => Step::WaitUntil(end.min(self.deadline)),
                _ => Step::Done,
            };
        }
        let Some(stage) = self.stages.get(self.next).copied() else {
            return match self.stage_ends {
                Some(end) if now < end => Step::WaitUntil(end.min(self.deadline)),
                _ => Step::Done,
            };
        };
        self.next += 1;
        self.stage_ends = Some(now + stage.wait);
        let mut q = self.base.clone();
        q.id = QueryId::random();
        q.hops = stage.hops;
        self.ids.push(q.id);
        Step::Send(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Filters;

    #[test]
    fn widens_until_enough_results() {
        let t = Instant::now();
        let base = Query::new("x1 y2", Filters::default(), 4).unwrap();
        let mut d = DynamicQuery::new(base, default_stages(4), 5, t + Duration::from_secs(30));
        let Step::Send(a) = d.poll(t, 0) else {
            panic!("first stage")
        };
        assert_eq!(a.hops, 2);
        assert!(matches!(d.poll(t, 0), Step::WaitUntil(_)));
        let Step::Send(b) = d.poll(t + Duration::from_secs(1), 1) else {
            panic!("second stage")
        };
        assert_eq!(b.hops, 4);
        assert_ne!(a.id, b.id);
        // Enough results: no third stage.
        assert!(matches!(
            d.poll(t + Duration::from_secs(2), 5),
            Step::WaitUntil(_)
        ));
        assert_eq!(d.poll(t + Duration::from_secs(4), 5), Step::Done);
        assert_eq!(d.ids().len(), 2);
    }

    #[test]
    fn stops_at_the_deadline_and_after_the_last_stage() {
        let t = Instant::now();
        let base = Query::new("x1", Filters::default(), 7).unwrap();
        let stages = default_stages(7);
        assert_eq!(stages.len(), 2);
        let mut d = DynamicQuery::new(base.clone(), stages, 1, t + Duration::from_secs(60));
        let mut sent = 0;
        let mut now = t;
        loop {
            match d.poll(now, 0) {
                Step::Send(_) => sent += 1,
                Step::WaitUntil(u) => now = u,
                Step::Done => break,
            }
        }
        assert_eq!(sent, 2);
        let mut short = DynamicQuery::new(base, default_stages(4), 1, t);
        assert_eq!(short.poll(t, 0), Step::Done);
    }
}
