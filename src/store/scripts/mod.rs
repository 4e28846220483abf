//! Every Lua script recur runs in Redis, in one registry. Each script is a `.lua` file of this
//! folder; the registry puts the lease fence (`fence.lua`: `holds(lease, token)`) in front of
//! every one, and the save snippet (`save.lua`) in front of the two commits that save an order
//! (`commit.lua`, `fire.lua`), so the fence and the save are each written once.
//!
//! One strategy for a Redis that does not know a script (restarted, promoted, flushed): a
//! single call goes through [`redis::Script::invoke_async`] (EVALSHA, and on NOSCRIPT the
//! script is loaded and the call sent again); a hot pipeline of EVALSHA calls (commits,
//! webhook progress, publishing) that met NOSCRIPT loads every script of the registry with
//! [`load_all`] and is sent again once. The rare pipelines (lease renewal, stream trims,
//! clock marks, a few a second at most) send the text with EVAL, which cannot meet NOSCRIPT.
//! No Rust file holds Lua: `tests` below checks that every file here is registered and that no
//! script compares a lease by hand.

use std::sync::OnceLock;

use super::RedisConn;

/// A script of the registry: its name (the file), its full source and, once computed, its
/// SHA-1 as Redis knows it.
pub struct Lua {
    name: &'static str,
    source: &'static str,
    script: OnceLock<redis::Script>,
}

impl Lua {
    const fn new(name: &'static str, source: &'static str) -> Lua {
        Lua {
            name,
            source,
            script: OnceLock::new(),
        }
    }

    /// The script, for a single call (`.key(..).arg(..).invoke_async(..)`).
    pub fn script(&self) -> &redis::Script {
        self.script.get_or_init(|| redis::Script::new(self.source))
    }

    /// Its SHA-1, for EVALSHA in a pipeline.
    pub fn sha(&self) -> &str {
        self.script().get_hash()
    }

    /// Its full source (with the prelude), as Redis runs it.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The file it comes from.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A script of this folder with the fence in front.
macro_rules! lua {
    ($(#[$doc:meta])* $name:ident = $file:literal) => {
        $(#[$doc])*
        pub static $name: Lua = Lua::new($file, concat!(include_str!("fence.lua"), include_str!($file)));
    };
    ($(#[$doc:meta])* $name:ident = $file:literal with save) => {
        $(#[$doc])*
        pub static $name: Lua = Lua::new(
            $file,
            concat!(include_str!("fence.lua"), include_str!("save.lua"), include_str!($file)),
        );
    };
}

lua!(
    /// One order's commit, all or nothing (see the file).
    COMMIT = "commit.lua" with save
);
lua!(
    /// The lean commit of a timer firing: commit.lua's save of an existing order.
    FIRE = "fire.lua" with save
);
lua!(
    /// A confirmation's write: the lease written back unchanged if still held.
    LEASE_TOUCH = "lease_touch.lua"
);
lua!(
    /// One order's contribution to its customer's statistics, exactly once.
    STATS = "stats.lua"
);
lua!(
    /// One webhook progress write of a partition.
    WEBHOOK = "webhook.lua"
);
lua!(
    /// Publishes a confirmed change entry read back from its stream.
    PUBLISH_CHANGE = "publish_change.lua"
);
lua!(
    /// Takes a partition's lease if it is free.
    LEASE_ACQUIRE = "lease_acquire.lua"
);
lua!(
    /// Extends a held lease.
    LEASE_RENEW = "lease_renew.lua"
);
lua!(
    /// Deletes a held lease.
    LEASE_RELEASE = "lease_release.lua"
);
lua!(
    /// Keeps a reply under a lease.
    KEEP_REPLY = "keep_reply.lua"
);
lua!(
    /// HSET of one field under a lease.
    FENCED_HSET = "fenced_hset.lua"
);
lua!(
    /// XTRIM of a partition's event stream under its lease, sparing unfinished webhooks.
    FENCED_TRIM = "fenced_trim.lua"
);
lua!(
    /// Sets or removes one order's timer under its partition's lease.
    SET_TIMER = "set_timer.lua"
);
lua!(
    /// Records how far a partition got (a clock's fired time, a test-clock job's seq).
    MARK_UPTO = "mark_upto.lua"
);
lua!(
    /// Claims a customer's cart name.
    CART_CLAIM = "cart_claim.lua"
);
lua!(
    /// Releases a cart name's claim.
    CART_RELEASE = "cart_release.lua"
);
lua!(
    /// Records which order a request by cart name resolved to.
    CART_RESOLVE = "cart_resolve.lua"
);
lua!(
    /// Begins an advance of the shared simulated clock.
    CLOCK_BEGIN = "clock_begin.lua"
);
lua!(
    /// Completes an advance of the shared simulated clock.
    CLOCK_FINISH = "clock_finish.lua"
);
lua!(
    /// Creates a test clock.
    TEST_CLOCK_CREATE = "test_clock_create.lua"
);
lua!(
    /// Begins a job (advance, deletion) on a test clock.
    TEST_CLOCK_BEGIN = "test_clock_begin.lua"
);
lua!(
    /// Completes a test clock's job.
    TEST_CLOCK_FINISH = "test_clock_finish.lua"
);
lua!(
    /// Appends a retryDeadWebhooks request under partition 0's lease.
    REDELIVER_REQUEST = "redeliver_request.lua"
);
lua!(
    /// Binds a customer to a test clock.
    TEST_CLOCK_BIND = "test_clock_bind.lua"
);

/// Every script of the registry.
pub static ALL: [&Lua; 24] = [
    &COMMIT,
    &FIRE,
    &LEASE_TOUCH,
    &STATS,
    &WEBHOOK,
    &PUBLISH_CHANGE,
    &LEASE_ACQUIRE,
    &LEASE_RENEW,
    &LEASE_RELEASE,
    &KEEP_REPLY,
    &FENCED_HSET,
    &FENCED_TRIM,
    &SET_TIMER,
    &MARK_UPTO,
    &CART_CLAIM,
    &CART_RELEASE,
    &CART_RESOLVE,
    &CLOCK_BEGIN,
    &CLOCK_FINISH,
    &TEST_CLOCK_CREATE,
    &TEST_CLOCK_BEGIN,
    &TEST_CLOCK_FINISH,
    &TEST_CLOCK_BIND,
    &REDELIVER_REQUEST,
];

/// Loads every script of the registry into Redis (on a cluster, into every master): at
/// start-up, and when a pipeline of EVALSHA calls met NOSCRIPT.
///
/// # Errors
/// The Redis error (a script that does not compile is one too: the tests load them all).
pub async fn load_all(conn: &mut RedisConn) -> Result<(), redis::RedisError> {
    for lua in ALL {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(lua.source())
            .query_async(conn)
            .await?;
        debug_assert_eq!(sha, lua.sha(), "{}", lua.name());
    }
    Ok(())
}

/// Whether a pipeline reply is NOSCRIPT (the script is not loaded in that Redis).
pub fn is_noscript(v: &redis::Value) -> bool {
    matches!(v, redis::Value::ServerError(e) if e.code() == "NOSCRIPT")
}

/// Whether a Redis error is NOSCRIPT.
pub fn is_noscript_error(e: &redis::RedisError) -> bool {
    e.code() == Some("NOSCRIPT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lua_file_is_registered_once_and_fenced_scripts_use_the_prelude() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/scripts");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".lua") && f != "fence.lua" && f != "save.lua")
            .collect();
        files.sort();
        let mut names: Vec<&str> = ALL.iter().map(|l| l.name()).collect();
        names.sort_unstable();
        assert_eq!(names, files);
        for lua in ALL {
            assert!(lua.source().starts_with(include_str!("fence.lua")));
            // The fence is written once: no script compares a lease by hand.
            let body = &lua.source()[include_str!("fence.lua").len()..];
            for (at, _) in body.match_indices("redis.call('GET', KEYS[") {
                let rest = &body[at..];
                let end = rest.find(')').unwrap_or(rest.len());
                let after = rest[end + 1..].trim_start();
                assert!(
                    !after.starts_with("~= ARGV[") && !after.starts_with("== ARGV["),
                    "{} writes the fence by hand",
                    lua.name()
                );
            }
        }
        let shas: std::collections::HashSet<&str> = ALL.iter().map(|l| l.sha()).collect();
        assert_eq!(shas.len(), ALL.len());
    }
}
