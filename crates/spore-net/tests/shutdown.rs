//! After shutdown no task is left alive: the swarm task, connection tasks,
//! QUIC endpoint drivers and mDNS interface tasks all end.

mod common;

use std::time::Duration;

use common::{start, tcp_addr, wait_for_status, wait_until};
use spore_core::Hash;
use spore_net::{NetConfig, NetError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_left_after_shutdown() {
    common::init_tracing();
    let began = std::time::Instant::now();
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    let cfg = || NetConfig {
        quic: true,
        mdns: true,
        ..NetConfig::for_tests()
    };
    let a = start(cfg()).await;
    let b = start(NetConfig {
        bootstrap: vec![tcp_addr(&a).await],
        ..cfg()
    })
    .await;
    let c = start(NetConfig {
        bootstrap: vec![tcp_addr(&a).await],
        ..cfg()
    })
    .await;
    eprintln!("three nodes up after {:?}", began.elapsed());
    // A lookup from an empty routing table returns nothing at once: wait
    // until identify has put the bootstrap node into b's and c's tables.
    for n in [&b, &c] {
        wait_for_status(
            n.handle(),
            Duration::from_secs(10),
            "routing table filled",
            |s| s.routing_table_size > 0,
        )
        .await;
    }
    let t0 = std::time::Instant::now();
    let hash = Hash::of(b"shutdown");
    b.handle().start_providing(hash).await.expect("provide");
    let found = c
        .handle()
        .find_providers_with(hash, 1, Duration::from_secs(10))
        .await
        .expect("lookup");
    assert_eq!(found.len(), 1);
    eprintln!("provide + lookup took {:?}", t0.elapsed());
    assert!(metrics.num_alive_tasks() > baseline);

    let handle = c.handle().clone();
    let t1 = std::time::Instant::now();
    for n in [a, b, c] {
        n.shutdown().await;
    }
    eprintln!("shutdown took {:?}", t1.elapsed());
    // A handle that outlives its node fails cleanly.
    assert_eq!(handle.status().await.unwrap_err(), NetError::Shutdown);

    wait_until(Duration::from_secs(10), "all tasks ended", || async {
        metrics.num_alive_tasks() <= baseline
    })
    .await;
}
