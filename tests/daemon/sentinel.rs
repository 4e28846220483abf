//! Sentinel: a master, its replica and three Sentinels, all private redis-servers on free
//! loopback ports. recur finds the master through the Sentinels; the master is SIGKILLed in the
//! middle of a stream of commands from a retrying client, a Sentinel promotes the replica, and
//! recur goes on with it: every acknowledged change is there, event ids are unique and every
//! order's sequence has no gap, statistics equal a recomputation.

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{json, Value};
use tempfile::TempDir;

use recur::admin::client::{AdminClient, RequestOptions};
use recur::config::Settings;
use recur::store::RedisAddress;

use crate::support::*;

const MASTER: &str = "recurmaster";

/// The group: servers and Sentinels as child processes (killed on drop).
pub struct SentinelGroup {
    _dir: TempDir,
    master: tokio::process::Child,
    master_port: u16,
    _replica: tokio::process::Child,
    replica_port: u16,
    _sentinels: Vec<tokio::process::Child>,
    sentinel_ports: Vec<u16>,
}

fn server(dir: &std::path::Path, port: u16, extra: &[String]) -> tokio::process::Child {
    tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server")
}

async fn answers(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return false;
    };
    match client.get_multiplexed_async_connection().await {
        Ok(mut c) => redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

async fn conn(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

impl SentinelGroup {
    pub async fn start() -> SentinelGroup {
        let dir = tempfile::tempdir().unwrap();
        let (master_port, replica_port) = (free_port(), free_port());
        let mdir = dir.path().join("master");
        let rdir = dir.path().join("replica");
        std::fs::create_dir_all(&mdir).unwrap();
        std::fs::create_dir_all(&rdir).unwrap();
        let master = server(&mdir, master_port, &[]);
        let replica = server(
            &rdir,
            replica_port,
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ],
        );
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let sdir = dir.path().join(format!("sentinel{i}"));
            std::fs::create_dir_all(&sdir).unwrap();
            let conf = sdir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 4000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    sdir.display()
                ),
            )
            .unwrap();
            sentinels.push(
                tokio::process::Command::new("redis-server")
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("redis-server --sentinel"),
            );
            sentinel_ports.push(port);
        }
        let group = SentinelGroup {
            _dir: dir,
            master,
            master_port,
            _replica: replica,
            replica_port,
            _sentinels: sentinels,
            sentinel_ports,
        };
        // Up, the replica in sync, and every Sentinel aware of it and of the other Sentinels.
        for _ in 0..300 {
            if group.ready().await {
                return group;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the Sentinel group did not come up");
    }

    async fn ready(&self) -> bool {
        for port in [self.master_port, self.replica_port]
            .iter()
            .chain(&self.sentinel_ports)
        {
            if !answers(*port).await {
                return false;
            }
        }
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn(self.replica_port).await)
            .await
            .unwrap_or_default();
        if !info.contains("master_link_status:up") {
            return false;
        }
        for port in &self.sentinel_ports {
            let mut c = conn(*port).await;
            let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                .arg("replicas")
                .arg(MASTER)
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            let sentinels: Vec<redis::Value> = redis::cmd("SENTINEL")
                .arg("sentinels")
                .arg(MASTER)
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            if replicas.is_empty() || sentinels.len() < 2 {
                return false;
            }
        }
        true
    }

    fn sentinel_urls(&self) -> String {
        self.sentinel_ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The master's port as the Sentinels name it now.
    async fn named_master(&self) -> Option<u16> {
        for port in &self.sentinel_ports {
            let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER)
                .query_async(&mut conn(*port).await)
                .await
                .ok()?;
            if let Some((_, p)) = addr {
                return Some(p);
            }
        }
        None
    }
}

impl TestStore for SentinelGroup {
    fn address(&self) -> RedisAddress {
        RedisAddress::sentinel(
            MASTER,
            self.sentinel_ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect(),
            None,
            None,
        )
    }

    fn settings(&self, prefix: &str) -> Settings {
        let mut s = settings(&self.sentinel_urls(), prefix);
        s.redis.sentinel.master = MASTER.to_string();
        s
    }
}

#[tokio::test]
async fn a_master_killed_mid_stream_loses_no_acknowledged_change() {
    let group = SentinelGroup::start().await;
    let h = Harness::start_on(group, |_| {}).await;
    let client = AdminClient::connect_to(&h.redis.address(), "t")
        .await
        .expect("client through the Sentinels");
    let options = RequestOptions {
        total_timeout: Duration::from_secs(60),
        ..RequestOptions::default()
    };
    const ORDERS: usize = 120;
    let mut acknowledged = BTreeMap::new();
    let mut killed_at = None;
    for i in 0..ORDERS {
        if i == ORDERS / 3 {
            // Mid-stream: the master dies.
            let pid = h.redis.master.id().unwrap();
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            killed_at = Some(i);
        }
        let id = format!("o{i:03}");
        let mut args = monthly(&id, "OFFLINE", 6, "10.00");
        args["customerId"] = json!(format!("c{}", i % 7));
        args["paid"] = json!(true);
        let reply = client
            .request_with(
                RequestOptions {
                    id: Some(format!("create-{id}")),
                    ..options.clone()
                },
                "createOrder",
                args,
            )
            .await
            .expect("a reply");
        assert!(reply.ok, "{id}: {:?}", reply.error);
        acknowledged.insert(id, reply.result.unwrap());
    }
    assert!(killed_at.is_some());
    let promoted = h.redis.named_master().await.expect("a master");
    assert_eq!(
        promoted, h.redis.replica_port,
        "a Sentinel promoted the replica"
    );

    // Every acknowledged change is on the promoted master.
    let mut store = h.redis.store_conn().await;
    let keys = recur::store::Keys::new("t", partitions(&h.redis, "t").await);
    for (id, created) in &acknowledged {
        let stored: Option<String> = store.hget(keys.order_keys().order(id), "d").await.unwrap();
        let stored: Value = serde_json::from_str(
            &stored.unwrap_or_else(|| panic!("acknowledged {id} is missing after the failover")),
        )
        .unwrap();
        assert_eq!(stored["version"], created["version"], "{id}");
    }
    // Event ids name one event each; every order's sequence has no gap.
    let events = stream_events(&h.redis, "t").await;
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "no event id names two events");
    let mut seqs: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in &events {
        seqs.entry(e["entityId"].as_str().unwrap())
            .or_default()
            .push(e["sequence"].as_u64().unwrap());
    }
    assert_eq!(seqs.len(), ORDERS, "every order has its events");
    for (id, s) in &seqs {
        let expected: Vec<u64> = (1..=s.len() as u64).collect();
        assert_eq!(s, &expected, "{id}: a sequence without gaps");
    }
    // Statistics equal a recomputation.
    for c in 0..7 {
        let customer = format!("c{c}");
        let report = h
            .ok("recomputeCustomerStats", json!({"customerId": customer}))
            .await;
        assert!(
            report["differences"].as_array().is_none_or(Vec::is_empty)
                || report["differences"].is_null()
                || report["differences"] == json!({}),
            "{customer}: {report}"
        );
    }
    eprintln!(
        "sentinel failover: {} commands sent, {} acknowledged, {} found after the failover (master killed before command {})",
        ORDERS,
        acknowledged.len(),
        acknowledged.len(),
        killed_at.unwrap()
    );
}
