//! `<prefix>:meta`: what the data was made with. Today the partition count: fixed when the data
//! is first made, so that every daemon (and every restart) splits orders the same way.

use redis::AsyncCommands;

use super::keys::{Keys, MAX_PARTITIONS, REVISION_1_PARTITIONS};
use super::{RedisConn, StoreError};

/// Why the configured partition count cannot be used with this data.
#[derive(Debug, thiserror::Error)]
pub enum PartitionsError {
    #[error(
        "this Redis data has {stored} partitions (kept in {meta}) but recur was configured with \
         partitions = {configured}; start it with partitions = {stored} (the count cannot change \
         without an offline migration), or use another prefix or Redis"
    )]
    Mismatch {
        meta: String,
        stored: u16,
        configured: u16,
    },
    #[error(
        "this Redis data was made by a recur that did not record its partitions; it has \
         {REVISION_1_PARTITIONS} (now kept in {meta}), but recur was configured with partitions = \
         {configured}; start it with partitions = {REVISION_1_PARTITIONS}: changing the count needs \
         an offline migration, which recur does not ship yet"
    )]
    Revision1 { meta: String, configured: u16 },
    #[error(
        "{meta} holds partitions = {value:?}, which is not a count from 1 to {MAX_PARTITIONS}"
    )]
    Corrupt { meta: String, value: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<redis::RedisError> for PartitionsError {
    fn from(e: redis::RedisError) -> Self {
        PartitionsError::Store(e.into())
    }
}

/// The partition count of the data under `prefix`: the one in `<prefix>:meta`; for data made
/// before the count was recorded (keys tagged `{p...}` but no meta), 16, recorded now; for new
/// data, `configured`, recorded now. Two daemons starting at once record one count (HSETNX).
///
/// # Errors
/// [`PartitionsError`] when the data's count is not `configured`, or Redis fails.
pub async fn settle_partitions(
    conn: &mut RedisConn,
    prefix: &str,
    configured: u16,
) -> Result<u16, PartitionsError> {
    let meta = format!("{prefix}:meta");
    let stored: Option<String> = conn.hget(&meta, "partitions").await?;
    let (stored, revision_1) = match stored {
        Some(v) => (parse(&meta, &v)?, false),
        None => {
            let old = has_tagged_keys(conn, prefix).await?;
            let count = if old {
                REVISION_1_PARTITIONS
            } else {
                configured
            };
            let _set: bool = conn.hset_nx(&meta, "partitions", count).await?;
            // Another daemon may have recorded it first: its value wins.
            let v: String = conn.hget(&meta, "partitions").await?;
            (parse(&meta, &v)?, old)
        }
    };
    match (stored == configured, revision_1) {
        (true, _) => Ok(stored),
        (false, true) => Err(PartitionsError::Revision1 { meta, configured }),
        (false, false) => Err(PartitionsError::Mismatch {
            meta,
            stored,
            configured,
        }),
    }
}

/// Moves what revision 1 kept under global names into revision 2's: the clock and the cron
/// bookkeeping to partition 0 (`{p0}:clock`, `{p0}:cron`). Replies stay where they are: they
/// are read from their old keys for one `reply_retention` after the upgrade, whose end is kept
/// in meta (`legacyRepliesUntil`, Unix ms) and returned (None: no revision 1 data).
///
/// # Errors
/// [`StoreError`] when Redis fails.
pub async fn upgrade_layout(
    conn: &mut RedisConn,
    keys: &Keys,
    reply_retention: std::time::Duration,
) -> Result<Option<i64>, StoreError> {
    let (old_clock, old_cron) = keys.clock_keys().legacy_clock_and_cron();
    let mut upgraded = false;
    for (old, new) in [
        (old_clock, keys.clock_keys().clock()),
        (old_cron, keys.clock_keys().cron()),
    ] {
        // Never over a record: a daemon that already upgraded (or new data) keeps its own.
        let exists: bool = conn.exists(&old).await?;
        if exists {
            move_key(conn, &old, &new).await?;
            upgraded = true;
        }
    }
    let field = "legacyRepliesUntil";
    if upgraded {
        move_order_index(conn, keys).await?;
        move_customers(conn, keys).await?;
        let retention = i64::try_from(reply_retention.as_millis()).unwrap_or(i64::MAX);
        let until = chrono::Utc::now()
            .timestamp_millis()
            .saturating_add(retention);
        let _set: bool = conn.hset_nx(keys.meta(), field, until).await?;
        tracing::info!("upgraded revision 1 data: clock and cron moved to partition 0; old replies read for one retention");
    }
    Ok(conn.hget(keys.meta(), field).await?)
}

/// Moves revision 1's global order index (`<prefix>:orders`) into the partitions' indexes.
async fn move_order_index(conn: &mut RedisConn, keys: &Keys) -> Result<(), StoreError> {
    let old = keys.order_keys().legacy_all_orders();
    let mut cursor: u64 = 0;
    loop {
        let (next, rows): (u64, Vec<(String, f64)>) = redis::cmd("ZSCAN")
            .arg(&old)
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !rows.is_empty() {
            let mut pipe = redis::pipe();
            for (id, created) in &rows {
                pipe.zadd(keys.order_keys().orders(keys.partition(id)), id, created);
            }
            let _: Vec<i64> = pipe.query_async(conn).await?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let _deleted: i64 = conn.del(&old).await?;
    Ok(())
}

/// Moves revision 1's customer keys (`<prefix>:customer:<id>:stats|contrib|orders`, and the
/// `<prefix>:customers` set) into the customers' partitions.
async fn move_customers(conn: &mut RedisConn, keys: &Keys) -> Result<(), StoreError> {
    let prefix = keys.prefix();
    let pattern = format!("{}:customer:*", glob_escape(prefix));
    let mut cursors = Vec::new();
    loop {
        let (found, next) = conn.scan_step(&pattern, &cursors).await?;
        for old in found {
            let rest = &old[prefix.len() + ":customer:".len()..];
            let Some((id, what)) = rest.rsplit_once(':') else {
                continue;
            };
            let new = match what {
                "stats" => keys.stats_keys().customer_stats(id),
                "contrib" => keys.stats_keys().customer_contributions(id),
                "orders" => keys.order_keys().customer_orders(id),
                _ => continue,
            };
            move_key(conn, &old, &new).await?;
        }
        if next.is_empty() {
            break;
        }
        cursors = next;
    }
    let old_set = format!("{prefix}:customers");
    let members: Vec<String> = conn.smembers(&old_set).await?;
    if !members.is_empty() {
        let mut pipe = redis::pipe();
        for c in &members {
            pipe.sadd(keys.stats_keys().customers(keys.partition(c)), c);
        }
        let _: Vec<i64> = pipe.query_async(conn).await?;
    }
    let _deleted: i64 = conn.del(&old_set).await?;
    Ok(())
}

fn parse(meta: &str, v: &str) -> Result<u16, PartitionsError> {
    v.parse::<u16>()
        .ok()
        .filter(|n| (1..=MAX_PARTITIONS).contains(n))
        .ok_or_else(|| PartitionsError::Corrupt {
            meta: meta.to_string(),
            value: v.to_string(),
        })
}

/// Whether any key under `prefix` carries a partition tag (data of an earlier recur).
async fn has_tagged_keys(conn: &mut RedisConn, prefix: &str) -> Result<bool, StoreError> {
    let pattern = format!("{}:{{p*", glob_escape(prefix));
    // On a cluster, over every master (SCAN on one node sees only that node's keys).
    let mut cursors = Vec::new();
    loop {
        let (keys, next) = conn.scan_step(&pattern, &cursors).await?;
        if !keys.is_empty() {
            return Ok(true);
        }
        if next.is_empty() {
            return Ok(false);
        }
        cursors = next;
    }
}

/// Moves `old` to `new`, never over an existing `new`: RENAMENX on one server. On a cluster
/// the two names are in different hash slots (revision 1's names carry no partition tag), where
/// RENAME is a CROSSSLOT error: DUMP, RESTORE (refused if `new` exists), then DEL of `old`. Not
/// atomic there, but a crash in between leaves both, and the next start only deletes `old`.
async fn move_key(conn: &mut RedisConn, old: &str, new: &str) -> Result<(), StoreError> {
    if !conn.is_cluster() {
        let _moved: bool = redis::cmd("RENAMENX")
            .arg(old)
            .arg(new)
            .query_async(conn)
            .await?;
        return Ok(());
    }
    let dumped: Option<Vec<u8>> = redis::cmd("DUMP").arg(old).query_async(conn).await?;
    let Some(dumped) = dumped else {
        return Ok(());
    };
    let restored: Result<(), redis::RedisError> = redis::cmd("RESTORE")
        .arg(new)
        .arg(0)
        .arg(dumped)
        .query_async(conn)
        .await;
    match restored {
        Ok(()) => {}
        Err(e) if e.code() == Some("BUSYKEY") => {}
        Err(e) => return Err(e.into()),
    }
    let _deleted: i64 = conn.del(old).await?;
    Ok(())
}

/// `s` with Redis glob characters escaped, so it matches only itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_in_a_prefix_match_only_themselves() {
        assert_eq!(glob_escape("recur"), "recur");
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }

    #[test]
    fn only_counts_from_1_to_1024_are_read() {
        assert_eq!(parse("m", "64").unwrap(), 64);
        for bad in ["0", "1025", "-1", "x", ""] {
            assert!(
                matches!(parse("m", bad), Err(PartitionsError::Corrupt { .. })),
                "{bad}"
            );
        }
    }
}
