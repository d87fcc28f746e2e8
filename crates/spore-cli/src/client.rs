//! Talking to a running daemon: find it through the home directory, then
//! call its API with the token kept there.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use spore_node::{ApiEndpoint, Home, api_token};

/// A daemon that answered its health check.
#[derive(Debug)]
pub(crate) struct Daemon {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Daemon {
    /// The daemon of `home`, if one is running and answering.
    pub(crate) fn find(home: &Home) -> Option<Self> {
        let endpoint = ApiEndpoint::read(home)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_millis(500)))
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let base = format!("http://{}", endpoint.addr);
        let healthy = agent
            .get(format!("{base}/v1/health"))
            .call()
            .is_ok_and(|r| r.status().is_success());
        if !healthy {
            return None;
        }
        Some(Self {
            base,
            token: api_token(home).ok()?,
            agent,
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.base
    }

    fn finish(mut response: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .context("reading the daemon's answer")?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no details");
            bail!("{message}");
        }
        Ok(body)
    }

    pub(crate) fn get(&self, path: &str) -> Result<Value> {
        let response = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .context("calling the daemon")?;
        Self::finish(response)
    }

    /// A GET whose body is read as it arrives (server-sent events).
    pub(crate) fn get_stream(&self, path: &str) -> Result<impl std::io::BufRead + use<>> {
        let response = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Accept", "text/event-stream")
            .call()
            .context("calling the daemon")?;
        let status = response.status();
        if !status.is_success() {
            Self::finish(response)?;
            bail!("the daemon answered {status}");
        }
        Ok(std::io::BufReader::new(response.into_body().into_reader()))
    }

    pub(crate) fn post(&self, path: &str, body: Value) -> Result<Value> {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(body)
            .context("calling the daemon")?;
        Self::finish(response)
    }
}
