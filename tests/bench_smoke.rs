//! CI smoke test of `recur bench`: a tiny version of every scenario (N = 200) against its own
//! private redis-server and the real `recur` binary. Asserts only that each completes and
//! reports the expected counts; no timing assertions.

use std::path::Path;
use std::time::Duration;

use recur_bench::{self as bench, admin, bullmq, memory, recovery, sizing, steady, BurstOptions};

const N: usize = 200;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_recur"))
}

#[tokio::test]
async fn burst_fires_every_order_once() {
    let r = bench::burst(&BurstOptions::new(N, binary())).await.unwrap();
    println!("{}", r.line());
    assert_eq!(r.transitions, N as u64);
    assert_eq!(
        r.events,
        2 * N as u64,
        "orderCycleStarted + orderUpdated each"
    );
}

#[tokio::test]
async fn burst_end_applies_a_stats_delta_per_order() {
    let r = bench::burst_end(&BurstOptions::new(N, binary()))
        .await
        .unwrap();
    println!("{}", r.line());
    assert_eq!(r.transitions, N as u64);
    assert_eq!(r.stats_deltas, N as u64);
}

#[tokio::test]
async fn burst_end_on_three_daemons_fires_and_applies_each_once() {
    // Summed over the three daemons: each order ends once, each stats delta is applied once
    // (many of them relayed to the daemon that owns the customer).
    let o = BurstOptions {
        daemons: 3,
        ..BurstOptions::new(N, binary())
    };
    let r = bench::burst_end(&o).await.unwrap();
    println!("{}", r.line());
    assert_eq!(r.transitions, N as u64);
    assert_eq!(r.stats_deltas, N as u64);
    assert!(r.line().contains("daemons=3"), "{}", r.line());
}

#[tokio::test]
async fn burst_on_a_cluster_fires_every_order_once() {
    let o = BurstOptions {
        cluster: true,
        ..BurstOptions::new(N, binary())
    };
    let r = bench::burst(&o).await.unwrap();
    println!("{}", r.line());
    assert_eq!(r.transitions, N as u64);
    assert_eq!(r.events, 2 * N as u64);
    assert!(r.line().contains("redis=cluster3"), "{}", r.line());
}

#[tokio::test]
async fn burst_end_on_a_cluster_applies_a_stats_delta_per_order() {
    let o = BurstOptions {
        cluster: true,
        ..BurstOptions::new(N, binary())
    };
    let r = bench::burst_end(&o).await.unwrap();
    println!("{}", r.line());
    assert_eq!(r.transitions, N as u64);
    assert_eq!(r.stats_deltas, N as u64);
}

#[tokio::test]
async fn steady_runs_its_days() {
    let mut o = steady::SteadyOptions::new(N, binary());
    o.days = 45;
    let r = steady::run(&o).await.unwrap();
    println!("{}", r.line());
    assert_eq!(r.advances, 45);
    // Every order starts in January (PENDING -> ACTIVE) and most renew in February.
    assert!(r.transitions >= N as u64, "{}", r.line());
    assert!(r.commands > 0);
}

#[tokio::test]
async fn recovery_catches_up_every_overdue_order() {
    let r = recovery::run(&recovery::RecoveryOptions::new(N, binary()))
        .await
        .unwrap();
    println!("{}", r.line());
    assert_eq!(r.transitions, N as u64);
    assert!(r.first_transition <= r.caught_up);
}

#[tokio::test]
async fn admin_latency_runs_through_a_system_clock_burst() {
    let r = admin::run(&admin::AdminOptions::new(N, binary()))
        .await
        .unwrap();
    println!("{}", r.line());
    assert_eq!(r.errors, 0);
    assert!(r.transitions >= N as u64, "{}", r.line());
}

#[tokio::test]
async fn memory_weighs_resident_actors_and_passivates_them() {
    let mut o = memory::MemoryOptions::new(N, binary());
    o.touch = 50;
    o.passivation = Duration::from_secs(1);
    let r = memory::run(&o).await.unwrap();
    println!("{}", r.line());
    assert!(r.resident > 0, "{}", r.line());
    assert_eq!(r.resident_after, 0, "{}", r.line());
}

/// Runs only where the peer is installed (`recur bench bullmq` installs it under
/// `bullmq::install_dir()`, outside the repository): CI has no npm step.
#[tokio::test]
async fn bullmq_compare_when_the_peer_is_installed() {
    let dir = bullmq::install_dir();
    if !bullmq::peer_installed(&dir) {
        eprintln!(
            "skipped: the BullMQ peer is not installed in {}",
            dir.display()
        );
        return;
    }
    let mut o = bullmq::CompareOptions::new(N, binary());
    o.install = false;
    o.concurrencies = vec![50];
    o.aof = vec![false];
    let line = bullmq::compare(&o).await.unwrap();
    println!("{line}");
    assert!(line.contains("ratio="), "{line}");
    assert!(!line.contains("skipped"), "{line}");
}

#[tokio::test]
async fn shapes_write_every_order_in_each_shape() {
    for shape in bench::shapes::SHAPES {
        let r = bench::shapes::run_shape(shape, N).await.unwrap();
        println!("{}", r.line());
        assert_eq!(r.orders, N);
        assert!(
            r.commands
                .iter()
                .any(|(c, calls, _)| c == "xadd" && *calls == N as u64),
            "a change entry per order: {}",
            r.line()
        );
    }
}

#[tokio::test]
async fn forecast_counts_every_cycle_start_of_a_small_book() {
    let r = bench::forecast::run(&bench::forecast::ForecastOptions::new(N, binary()))
        .await
        .unwrap();
    println!("{}", r.line());
    // Half the orders have 12 cycles (11 more starts), half are unlimited (36 more, to the end
    // of 2028): every order is paid or not dunned, so each starts them all.
    assert_eq!(r.cycle_starts, (N as u64 / 2) * 11 + (N as u64 / 2) * 35);
}

#[tokio::test]
async fn sizing_counts_an_entry_per_change_and_weighs_them() {
    let o = sizing::SizingOptions {
        months: 2,
        ..sizing::SizingOptions::new(N, binary())
    };
    let r = sizing::run(&o).await.unwrap();
    println!("{}", r.line());
    // A creation entry per order, then one per order for each month's new cycle.
    assert_eq!(r.seeded_entries, N as u64, "{}", r.line());
    assert_eq!(r.entries, 2 * N as u64, "{}", r.line());
    assert!(r.bytes_per_entry() > 100.0, "{}", r.line());
    assert!(r.bytes_per_order() > 100.0, "{}", r.line());
}

#[tokio::test]
async fn testclock_fires_a_year_of_a_small_clock_while_live_orders_come_due() {
    let r = bench::testclock::run(&bench::testclock::TestClockOptions::new(N, binary()))
        .await
        .unwrap();
    println!("{}", r.line());
    // 11 more cycle starts and the end of each 12-cycle order in the year.
    assert_eq!(r.changes, N * 12);
    assert!(r.alone.samples > 0 && r.during.samples > 0, "{}", r.line());
}

#[tokio::test]
async fn http_answers_every_request_both_ways_on_kept_alive_connections() {
    let mut o = bench::http::HttpOptions::new(N, binary());
    o.rate = 2_000;
    let r = bench::http::run(&o).await.unwrap();
    println!("{}", r.text());
    // Warm-up aside: each command closed-loop and at the fixed rate, over HTTP and pub/sub.
    assert_eq!(r.phases.len(), 8, "{}", r.line());
    for p in &r.phases {
        assert_eq!((p.sent, p.ok), (N, N), "{}", r.line());
        assert_eq!(p.in_flight, bench::http::CONNECTIONS);
        let connections = match p.way {
            bench::http::Way::Http => bench::http::CONNECTIONS,
            bench::http::Way::PubSub => 0,
        };
        assert_eq!(p.connections, connections, "{}", r.line());
    }
    // Every HTTP request went over the phase's 64 connections, none closed under it.
    assert_eq!(r.reconnects(), 0, "{}", r.line());
    assert!(r.line().contains("create_ratio="), "{}", r.line());
}

#[test]
fn every_scenario_is_listed() {
    for s in [
        "burst",
        "burst-end",
        "steady",
        "recovery",
        "admin",
        "memory",
        "forecast",
        "sizing",
        "testclock",
        "http",
        "bullmq",
        "shapes",
    ] {
        assert!(bench::SCENARIOS.contains(&s));
    }
}
