//! `shapes`: what one fire commit costs Redis in each shape it could take (issue 26). N real
//! orders (the burst's, seeded through the daemon's own commit) are each written once more as
//! a timer firing would write them — the order hash, its timer, its change entry (published on
//! the events channel) — in one of four shapes, on a fresh private Redis each (unix socket,
//! append-only like the embedded one), four pipelines in flight of 128 orders each:
//!
//! - `single`: one `fire.lua` call per order (the shape before issue 26);
//! - `batched`: one `fire.lua` call per 16 orders of one partition (the daemon's now);
//! - `multi`: per 16 orders of one partition, `WATCH` the lease and the orders and read them
//!   (one round trip), then the plain writes in `MULTI`/`EXEC` (a second one): the fence and
//!   the version guards without Lua;
//! - `plain`: the plain writes without any guard (a floor, not a way to commit).
//!
//! One line per shape: Redis CPU time per order (from /proc), bytes sent to Redis per order and
//! `INFO commandstats` per order for the commands that take time.

use std::time::{Duration, Instant as WallInstant};

use redis::Value;

use recur::store::{self, scripts, Keys, DEFAULT_PARTITIONS};

use super::{cpu_time, order_id, seed_monthly_to, setup, BenchError, BenchRedis, TempDir, PREFIX};

/// Orders of one partition in one call (or one MULTI).
pub const GROUP: usize = 16;
/// Orders per pipeline.
const PIPELINE: usize = 128;
/// Pipelines in flight.
const IN_FLIGHT: usize = 4;

/// The shapes, in the order they run.
pub const SHAPES: [&str; 4] = ["single", "batched", "multi", "plain"];

/// One order as a fire writes it.
struct Fire {
    key: String,
    id: String,
    partition: u16,
    version: u64,
    /// The whole change entry; the order JSON starts at `entity`.
    change: String,
    entity: usize,
    due_ms: i64,
}

impl Fire {
    fn json(&self) -> &str {
        &self.change[self.entity..self.change.len() - 1]
    }
}

/// A change head of the size of a cycle start's (two events, SPEC 4).
fn head(id: &str, customer: &str, version: u64) -> String {
    let event = |n: u64, kind: &str, data: &str| {
        format!(
            r#"{{"id":"{:08x}-0000-5000-8000-{:012x}","type":"{kind}","entityId":"{id}","eventTime":"2026-02-01T00:00:00.000Z","sequence":{n},"triggeredByAnonymizeRequest":false,"data":{data}}}"#,
            n, version
        )
    };
    format!(
        r#"{{"orderId":"{id}","customerId":"{customer}","version":{version},"events":[{},{}],"entity":"#,
        event(5, "orderCycleStarted", r#"{"cycleNumber":2}"#),
        event(6, "orderUpdated", "{}"),
    )
}

/// Reads every seeded order back and makes its next write.
async fn fires(
    conn: &mut store::RedisConn,
    keys: &Keys,
    n: usize,
) -> Result<Vec<Fire>, BenchError> {
    let mut out = Vec::with_capacity(n);
    for from in (0..n).step_by(1000) {
        let ids: Vec<String> = (from..(from + 1000).min(n)).map(order_id).collect();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(keys.order_keys().order(id))
                .arg("v")
                .arg("d");
        }
        let rows: Vec<(u64, String)> = pipe.query_async(conn).await.map_err(setup("read"))?;
        for (id, (version, json)) in ids.into_iter().zip(rows) {
            let h = head(&id, "c0", version + 1);
            let entity = h.len();
            out.push(Fire {
                key: keys.order_keys().order(&id),
                partition: keys.partition(&id),
                change: format!("{h}{json}}}"),
                entity,
                id,
                version,
                due_ms: 1_772_323_200_000,
            });
        }
    }
    Ok(out)
}

/// The orders in groups of [`GROUP`] of one partition.
fn groups(fires: &[Fire]) -> Vec<Vec<&Fire>> {
    let mut by_partition: Vec<Vec<&Fire>> = vec![Vec::new(); usize::from(DEFAULT_PARTITIONS)];
    for f in fires {
        by_partition[usize::from(f.partition)].push(f);
    }
    by_partition
        .into_iter()
        .flat_map(|p| p.chunks(GROUP).map(<[&Fire]>::to_vec).collect::<Vec<_>>())
        .collect()
}

/// The `fire.lua` call of a group (see the script for its keys and arguments).
fn fire_call(pipe: &mut redis::Pipeline, keys: &Keys, token: &str, group: &[&Fire]) {
    let p = group[0].partition;
    let cmd = pipe
        .cmd("EVALSHA")
        .arg(scripts::FIRE.sha())
        .arg(4 + group.len());
    cmd.arg(keys.lease(p))
        .arg(keys.order_keys().timers(p))
        .arg(keys.order_keys().events(p))
        .arg(keys.stats_keys().outbox(p));
    for f in group {
        cmd.arg(&f.key);
    }
    let common = group[0].key.len() - group[0].id.len();
    cmd.arg(token)
        .arg(keys.order_keys().events_channel())
        .arg(common);
    for f in group {
        cmd.arg(f.version)
            .arg(f.version + 1)
            .arg(&f.change)
            .arg(f.entity)
            .arg(f.due_ms)
            .arg(0);
    }
}

/// The plain writes of a group.
fn plain_writes(pipe: &mut redis::Pipeline, keys: &Keys, group: &[&Fire]) {
    let p = group[0].partition;
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(keys.order_keys().timers(p));
    for f in group {
        pipe.cmd("HSET")
            .arg(&f.key)
            .arg("v")
            .arg(f.version + 1)
            .arg("d")
            .arg(f.json());
        pipe.cmd("XADD")
            .arg(keys.order_keys().events(p))
            .arg("*")
            .arg("change")
            .arg(&f.change);
        pipe.cmd("PUBLISH")
            .arg(keys.order_keys().events_channel())
            .arg(&f.change);
        zadd.arg(f.due_ms).arg(&f.id);
    }
    pipe.add_command(zadd);
}

/// Every reply of a fire call is OK (one per order) or the call is refused.
fn all_ok(v: &Value) -> bool {
    let Value::Array(items) = v else {
        return false;
    };
    items.iter().all(|r| {
        matches!(r, Value::Array(x) if matches!(x.first(), Some(Value::BulkString(s)) if s == b"OK"))
    })
}

/// Writes `batch` (groups) in `shape` over `conn`.
async fn write(
    shape: &str,
    conn: &mut store::RedisConn,
    keys: &Keys,
    token: &str,
    batch: &[Vec<&Fire>],
) -> Result<(), BenchError> {
    match shape {
        "single" | "batched" => {
            let mut pipe = redis::pipe();
            for group in batch {
                if shape == "single" {
                    for f in group {
                        fire_call(&mut pipe, keys, token, &[f]);
                    }
                } else {
                    fire_call(&mut pipe, keys, token, group);
                }
            }
            let replies: Vec<Value> = pipe.query_async(conn).await.map_err(setup("fire"))?;
            if !replies.iter().all(all_ok) {
                return Err(BenchError::Setup(format!(
                    "a fire was refused: {replies:?}"
                )));
            }
        }
        "multi" => {
            for group in batch {
                let p = group[0].partition;
                let mut read = redis::pipe();
                let watch = read.cmd("WATCH").arg(keys.lease(p));
                for f in group {
                    watch.arg(&f.key);
                }
                read.cmd("GET").arg(keys.lease(p));
                for f in group {
                    read.cmd("HGET").arg(&f.key).arg("v");
                }
                let seen: Vec<Value> = read.query_async(conn).await.map_err(setup("watch"))?;
                let held = matches!(&seen[1], Value::BulkString(t) if t == token.as_bytes());
                let fresh = group.iter().zip(&seen[2..]).all(|(f, v)| {
                    matches!(v, Value::BulkString(s) if s == f.version.to_string().as_bytes())
                });
                if !held || !fresh {
                    return Err(BenchError::Setup("a fire was refused".into()));
                }
                let mut tx = redis::pipe();
                tx.atomic();
                plain_writes(&mut tx, keys, group);
                let done: Option<Vec<Value>> = tx.query_async(conn).await.map_err(setup("exec"))?;
                if done.is_none() {
                    return Err(BenchError::Setup("a MULTI was aborted".into()));
                }
            }
        }
        _ => {
            let mut pipe = redis::pipe();
            for group in batch {
                plain_writes(&mut pipe, keys, group);
            }
            let _: Vec<Value> = pipe.query_async(conn).await.map_err(setup("plain"))?;
        }
    }
    Ok(())
}

/// What one shape measured.
#[derive(Debug, Clone)]
pub struct ShapeReport {
    pub shape: &'static str,
    pub orders: usize,
    pub elapsed: Duration,
    pub redis_cpu: Duration,
    /// The main thread's (`INFO cpu`), seconds.
    pub redis_main_cpu: f64,
    pub input_bytes: u64,
    /// `INFO commandstats`: (command, calls, total µs), the busiest first.
    pub commands: Vec<(String, u64, u64)>,
}

impl ShapeReport {
    /// The one line the bench prints for it.
    pub fn line(&self) -> String {
        let n = self.orders.max(1) as f64;
        let commands: Vec<String> = self
            .commands
            .iter()
            .map(|(c, calls, usec)| {
                format!("{c}={:.2}us/{:.2}", *usec as f64 / n, *calls as f64 / n)
            })
            .collect();
        format!(
            "shapes shape={} orders={} group={GROUP} orders_per_s={:.0} redis_cpu_us_per_order={:.2} redis_main_cpu_us_per_order={:.2} redis_in_b_per_order={:.0} commandstats_per_order={}",
            self.shape,
            self.orders,
            n / self.elapsed.as_secs_f64().max(1e-9),
            self.redis_cpu.as_secs_f64() * 1e6 / n,
            self.redis_main_cpu * 1e6 / n,
            self.input_bytes as f64 / n,
            commands.join(","),
        )
    }
}

async fn info(conn: &mut store::RedisConn, section: &str) -> Result<String, BenchError> {
    redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .map_err(setup("INFO"))
}

/// The main thread's CPU time, seconds.
fn main_cpu(info: &str) -> f64 {
    let seconds = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    seconds("used_cpu_sys_main_thread:") + seconds("used_cpu_user_main_thread:")
}

fn input_bytes(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_input_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `cmdstat_<name>:calls=..,usec=..` of every command, the busiest first.
fn command_stats(info: &str) -> Vec<(String, u64, u64)> {
    let mut out: Vec<(String, u64, u64)> = info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|f| f.strip_prefix(k))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((name.to_string(), field("calls=")?, field("usec=")?))
        })
        .filter(|(name, _, _)| !matches!(name.as_str(), "info" | "config|resetstat"))
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.2));
    out
}

/// Runs `shape` over `orders` freshly seeded orders.
///
/// # Errors
/// [`BenchError`] when a step fails.
pub async fn run_shape(shape: &'static str, orders: usize) -> Result<ShapeReport, BenchError> {
    let temp = TempDir::new()?;
    let redis = BenchRedis::start_with(&temp.redis_dir(), false, true).await?;
    seed_monthly_to(&redis.address(), orders).await?;
    let keys = Keys::new(PREFIX, DEFAULT_PARTITIONS);
    let mut conn = store::connect(&redis.url())
        .await
        .map_err(setup("connect"))?;
    scripts::load_all(&mut conn).await.map_err(setup("load"))?;
    let all = fires(&mut conn, &keys, orders).await?;
    let token = "bench-d0:1";
    let mut leases = redis::pipe();
    for p in 0..DEFAULT_PARTITIONS {
        leases.cmd("SET").arg(keys.lease(p)).arg(token).ignore();
    }
    let () = leases
        .query_async(&mut conn)
        .await
        .map_err(setup("leases"))?;
    let groups = groups(&all);
    let batches: Vec<&[Vec<&Fire>]> = groups.chunks(PIPELINE / GROUP).collect();
    // Each pipeline in flight has a connection of its own (a WATCH belongs to its connection).
    let mut conns = Vec::new();
    for _ in 0..IN_FLIGHT {
        conns.push(
            store::connect(&redis.url())
                .await
                .map_err(setup("connect"))?,
        );
    }
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .map_err(setup("CONFIG RESETSTAT"))?;
    let input_before = input_bytes(&info(&mut conn, "stats").await?);
    let cpu_before = cpu_time(redis.pid()).unwrap_or_default();
    let main_before = main_cpu(&info(&mut conn, "cpu").await?);
    let started = WallInstant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = conns.iter_mut().map(|c| {
        let (next, batches, keys) = (&next, &batches, &keys);
        async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(batch) = batches.get(i) else {
                    return Ok::<(), BenchError>(());
                };
                write(shape, c, keys, token, batch).await?;
            }
        }
    });
    for r in futures_util::future::join_all(workers).await {
        r?;
    }
    let elapsed = started.elapsed();
    let redis_cpu = cpu_time(redis.pid())
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let redis_main_cpu = (main_cpu(&info(&mut conn, "cpu").await?) - main_before).max(0.0);
    let input = input_bytes(&info(&mut conn, "stats").await?).saturating_sub(input_before);
    let commands = command_stats(&info(&mut conn, "commandstats").await?);
    drop(conns);
    drop(conn);
    redis.stop().await;
    Ok(ShapeReport {
        shape,
        orders,
        elapsed,
        redis_cpu,
        redis_main_cpu,
        input_bytes: input,
        commands,
    })
}

/// Every shape, `rounds` times interleaved; one line each.
///
/// # Errors
/// [`BenchError`] when a step fails.
pub async fn run(orders: usize, rounds: usize) -> Result<String, BenchError> {
    let mut lines = Vec::new();
    for _ in 0..rounds.max(1) {
        for shape in SHAPES {
            let line = run_shape(shape, orders).await?.line();
            eprintln!("{line}");
            lines.push(line);
        }
    }
    Ok(lines.join("\n"))
}
