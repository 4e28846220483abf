//! Checking settings once they are read: each section's rules, one error per problem with
//! the setting's name.

use super::*;

impl Settings {
    pub(super) fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let w = &self.webhooks;
        if w.timeout.is_zero() || w.retry_initial.is_zero() || w.max_age.is_zero() {
            return Err(invalid(
                "webhooks",
                "timeout, retry_initial and max_age must be above zero",
            ));
        }
        if w.retry_max < w.retry_initial {
            return Err(invalid(
                "webhooks.retry_max",
                "must not be below retry_initial",
            ));
        }
        if w.max_in_flight == 0 {
            return Err(invalid("webhooks.max_in_flight", "must be at least 1"));
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, e) in w.endpoints.iter().enumerate() {
            let key = |k: &str| format!("webhooks.endpoints[{i}].{k}");
            let scheme_ok = e.url.starts_with("http://") || e.url.starts_with("https://");
            if !scheme_ok || e.url.len() <= "https://".len() || e.url.contains(char::is_whitespace)
            {
                return Err(invalid(
                    &key("url"),
                    format!(
                        "'{}' is not an http:// or https:// URL",
                        telemetry::mask_secrets(&e.url)
                    ),
                ));
            }
            if e.secret.is_empty() {
                return Err(invalid(&key("secret"), "must not be empty"));
            }
            let id = e.id();
            if id.is_empty()
                || id
                    .chars()
                    .any(|c| c.is_whitespace() || c == '{' || c == '}')
            {
                return Err(invalid(
                    &key("id"),
                    "must be non-empty, without spaces or braces",
                ));
            }
            if !ids.insert(id.to_string()) {
                return Err(invalid(&key("id"), format!("'{id}' names two endpoints")));
            }
            if e.events.is_empty() {
                return Err(invalid(
                    &key("events"),
                    "name event types, or [\"*\"] for every one",
                ));
            }
            for t in &e.events {
                let known = t == "*"
                    || serde_json::from_value::<crate::domain::EventType>(serde_json::json!(t))
                        .is_ok();
                if !known {
                    return Err(invalid(
                        &key("events"),
                        format!("'{t}' is not an event type"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `admin.identity`, `admin.channels`, `[admin.commands]` and `[[http.tokens]]`.
    pub(super) fn validate_identities(&self) -> Result<(), ConfigError> {
        let channel_rule = "a channel name is letters, digits, '_', '-' and '.' (at most 64), \
                            and not 'dead'";
        let a = &self.admin;
        for (i, c) in a.channels.iter().enumerate() {
            if !valid_channel_name(c) {
                return Err(invalid(
                    &format!("admin.channels[{i}]"),
                    format!("'{c}': {channel_rule}"),
                ));
            }
            if a.channels[..i].contains(c) {
                return Err(invalid(
                    &format!("admin.channels[{i}]"),
                    format!("'{c}' is listed twice"),
                ));
            }
        }
        if a.identity == Identity::Enforced && a.channels.is_empty() {
            return Err(invalid(
                "admin.channels",
                "admin.identity = \"enforced\" reads only the channels listed here; \
                 name at least one (e.g. [\"web\", \"backoffice\"])",
            ));
        }
        for (channel, commands) in &a.commands {
            if !valid_channel_name(channel) {
                return Err(invalid(
                    &format!("admin.commands.{channel}"),
                    channel_rule.to_string(),
                ));
            }
            if let Some(bad) = commands
                .iter()
                .find(|c| !crate::wire::COMMAND_NAMES.contains(&c.as_str()))
            {
                return Err(invalid(
                    &format!("admin.commands.{channel}"),
                    format!("'{bad}' is not an admin command"),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        let mut digests = std::collections::BTreeSet::new();
        for (i, t) in self.http.tokens.iter().enumerate() {
            let key = |k: &str| format!("http.tokens[{i}].{k}");
            if t.name.trim().is_empty() {
                return Err(invalid(&key("name"), "must not be empty"));
            }
            if !names.insert(t.name.as_str()) {
                return Err(invalid(
                    &key("name"),
                    format!("'{}' names two tokens", t.name),
                ));
            }
            // The digest is not echoed: it is no secret, but it is not the reader's business.
            if t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid(
                    &key("sha256"),
                    "must be the 64 hex digits of the token's SHA-256 \
                     (printf %s \"$TOKEN\" | sha256sum)",
                ));
            }
            if !digests.insert(t.sha256.to_ascii_lowercase()) {
                return Err(invalid(
                    &key("sha256"),
                    "another token has the same SHA-256",
                ));
            }
            if !valid_channel_name(&t.channel) {
                return Err(invalid(&key("channel"), channel_rule.to_string()));
            }
        }
        Ok(())
    }

    /// `[redis.tls]` goes with `rediss://` URLs, a client certificate with its key.
    pub(super) fn validate_redis_tls(&self, address: &RedisAddress) -> Result<(), ConfigError> {
        let tls = &self.redis.tls;
        if tls.is_set() && !address.uses_tls() {
            return Err(invalid(
                "redis.tls",
                "is set but redis.url is not a rediss:// URL: use rediss:// for TLS (or \
                 remove the redis.tls settings)",
            ));
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            let key = if tls.cert_file.is_some() {
                "redis.tls.key_file"
            } else {
                "redis.tls.cert_file"
            };
            return Err(invalid(
                key,
                "redis.tls.cert_file and redis.tls.key_file go together (a client certificate \
                 and its private key)",
            ));
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.prefix.is_empty()
            || self.prefix.ends_with(':')
            || self
                .prefix
                .chars()
                .any(|c| c.is_whitespace() || c == '{' || c == '}')
        {
            return Err(invalid(
                "prefix",
                "must be non-empty, without spaces, braces ({ }) and the trailing colon",
            ));
        }
        self.lifecycle
            .policy()
            .map_err(|message| invalid("lifecycle.dunning.retries", message))?;
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(invalid(
                "partitions",
                format!("must be between 1 and {MAX_PARTITIONS}"),
            ));
        }
        self.validate_redis()?;
        self.validate_webhooks()?;
        let listen = self.http.listen.trim();
        if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "http.listen",
                format!("'{listen}' is not an IP address and port (127.0.0.1:9464, 0.0.0.0:9464, [::1]:9464) or empty"),
            ));
        }
        if self.redis.embedded.binary.as_os_str().is_empty() {
            return Err(invalid("redis.embedded.binary", "must not be empty"));
        }
        if self.redis.embedded.data_dir.as_os_str().is_empty() {
            return Err(invalid("redis.embedded.data_dir", "must not be empty"));
        }
        self.validate_timings()?;
        if self.scheduler.batch_size == 0 {
            return Err(invalid("scheduler.batch_size", "must be at least 1"));
        }
        // More lanes than partitions run as one lane per partition (see scheduler::lanes).
        if self.scheduler.lanes == 0 {
            return Err(invalid("scheduler.lanes", "must be at least 1"));
        }
        if self.admin.max_request_bytes == 0 {
            return Err(invalid("admin.max_request_bytes", "must be at least 1"));
        }
        self.validate_identities()?;
        if self.events.max_len == 0 {
            return Err(invalid("events.max_len", "must be at least 1"));
        }
        telemetry::check_level(&self.log.level).map_err(|message| invalid("log.level", message))?;
        self.validate_behaviour()
    }

    /// The Redis settings: one mode (single, cluster, Sentinel), addresses that parse, TLS
    /// files that load, and what the embedded Redis cannot do refused.
    pub(super) fn validate_redis(&self) -> Result<(), ConfigError> {
        let sentinel = !self.redis.sentinel.master.is_empty();
        if sentinel && self.redis.cluster {
            return Err(invalid(
                "redis.sentinel.master",
                "Sentinel mode and redis.cluster = true are exclusive: a Redis Cluster fails \
                 over by itself",
            ));
        }
        if sentinel && self.redis.url.is_none() {
            return Err(invalid(
                "redis.sentinel.master",
                "Sentinel mode needs redis.url to list the Sentinels \
                 (redis://s1:26379,redis://s2:26379)",
            ));
        }
        match &self.redis.url {
            Some(url) if sentinel => {
                for (i, u) in url.split(',').enumerate() {
                    RedisAddress::parse(u.trim(), false).map_err(|message| {
                        invalid("redis.url", format!("Sentinel {}: {message}", i + 1))
                    })?;
                }
                let address = self
                    .redis_address()
                    .ok_or_else(|| invalid("redis.url", "is empty"))?;
                self.validate_redis_tls(&address)?;
            }
            Some(url) => {
                let address = RedisAddress::parse(url, self.redis.cluster)
                    .map_err(|message| invalid("redis.url", message))?;
                self.validate_redis_tls(&address)?;
            }
            None if self.redis.password.is_some() || self.redis.username.is_some() => {
                let key = if self.redis.password.is_some() {
                    "redis.password"
                } else {
                    "redis.username"
                };
                return Err(invalid(
                    key,
                    "needs redis.url: the embedded Redis (empty redis.url) listens on a private \
                     unix socket without a password",
                ));
            }
            None if self.redis.tls.is_set() => {
                return Err(invalid(
                    "redis.tls",
                    "needs a rediss:// redis.url: the embedded Redis (empty redis.url) does \
                     not use TLS",
                ));
            }
            None if self.redis.cluster => {
                return Err(invalid(
                    "redis.cluster",
                    "needs redis.url set to the cluster's seed nodes, comma-separated \
                     (redis://host:port,redis://host:port): the embedded Redis (empty \
                     redis.url) is a single server and cannot be a cluster",
                ));
            }
            None => {}
        }
        if self.redis.wait_replicas > 0 {
            if self.redis.url.is_none() {
                return Err(invalid(
                    "redis.wait_replicas",
                    "needs redis.url: the embedded Redis has no replicas, so every write would \
                     wait for replicas that never come (0 = do not wait)",
                ));
            }
            if self.redis.wait_timeout.is_zero() {
                return Err(invalid(
                    "redis.wait_timeout",
                    "must be longer than zero (a WAIT without a timeout would block forever)",
                ));
            }
        }
        Ok(())
    }

    /// Durations that must be positive, and the lease timing (renewal at most half the TTL).
    pub(super) fn validate_timings(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("actors.idle_passivation", self.actors.idle_passivation),
            ("scheduler.window", self.scheduler.window),
            ("admin.reply_retention", self.admin.reply_retention),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        if self.cluster.lease_ttl < Duration::from_millis(100) {
            return Err(invalid("cluster.lease_ttl", "must be at least 100ms"));
        }
        let renew = self.cluster.renew_interval();
        if renew.is_zero() || renew * 2 > self.cluster.lease_ttl {
            return Err(invalid(
                "cluster.renew_interval",
                "must be longer than zero and at most half of cluster.lease_ttl",
            ));
        }
        if self
            .cluster
            .daemon_id
            .as_deref()
            .is_some_and(|id| id.contains(':') || id.chars().any(char::is_whitespace))
        {
            return Err(invalid(
                "cluster.daemon_id",
                "may not contain ':' or spaces",
            ));
        }
        Ok(())
    }

    /// The behaviour settings: status-manager transitions between real statuses, promo
    /// codes with sensible values.
    pub(super) fn validate_behaviour(&self) -> Result<(), ConfigError> {
        for (channel, transitions) in &self.status_manager {
            for (from, to) in transitions {
                let key = format!("status_manager.{channel}.{from}");
                if let Some(bad) = std::iter::once(from)
                    .chain(to)
                    .find(|s| !ORDER_STATUSES.contains(&s.as_str()))
                {
                    return Err(invalid(
                        &key,
                        format!(
                            "`{bad}` is not an order status (one of {})",
                            ORDER_STATUSES.join(", ")
                        ),
                    ));
                }
            }
        }
        for (code, promo) in &self.promo_codes {
            let key = format!("promo_codes.{code}");
            if promo.value.is_sign_negative() {
                return Err(invalid(&format!("{key}.value"), "must not be negative"));
            }
            if promo.kind == PromoKind::Percent && promo.value > Decimal::ONE_HUNDRED {
                return Err(invalid(
                    &format!("{key}.value"),
                    "a percentage is at most 100",
                ));
            }
            if promo.first_cycles == Some(0) {
                return Err(invalid(
                    &format!("{key}.first_cycles"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}
