//! Cart names across daemons (SPEC 10): `{pC}:cart:<customer>:<name>` claims a customer's cart
//! name for one order (SET NX, or taken over from a claim that no longer holds), and
//! `{pC}:resolve:<request id>` records which order an updateOrder by name was resolved to, so
//! its retries reach the same order. Both keys are in the customer's partition.

use std::sync::LazyLock;

use super::{Store, StoreError};

/// Claims the name for ARGV[1] (value `<order id>|<claimed ms>`, ARGV[3] = now ms) unless
/// another order holds it; a claim of ARGV[2] (an order the caller found no longer has the
/// name) is taken over. Returns nil when claimed, else the value holding it.
static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder = string.match(cur, '^(.*)|') or cur
  if holder ~= ARGV[1] and holder ~= ARGV[2] then return cur end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[3])
return false
",
    )
});

/// Deletes the claim if it is ARGV[1]'s (a create that failed).
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur and (string.match(cur, '^(.*)|') or cur) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Who holds a cart name: the order, and since when (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameClaim {
    pub order_id: String,
    pub since_ms: i64,
}

impl NameClaim {
    fn parse(value: &str) -> NameClaim {
        match value.rsplit_once('|') {
            Some((id, ms)) => NameClaim {
                order_id: id.to_string(),
                since_ms: ms.parse().unwrap_or(0),
            },
            None => NameClaim {
                order_id: value.to_string(),
                since_ms: 0,
            },
        }
    }
}

/// Records the resolution of a request (SET NX EX) if the writer holds the customer
/// partition's lease, and returns the recorded order id (this one, or the first one);
/// 'FENCED' when the lease is not the writer's.
static RESOLVE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'FENCED' end
redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3])
return redis.call('GET', KEYS[1])
",
    )
});

impl Store {
    /// Claims cart name `name` of `customer` for `order_id`; `stale` is an order the caller
    /// checked no longer holds the name (its claim may be taken over). Ok(None) when claimed,
    /// Ok(Some(other)) when another order's claim stands.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn claim_cart_name(
        &self,
        customer: &str,
        name: &str,
        order_id: &str,
        stale: Option<&str>,
    ) -> Result<Option<NameClaim>, StoreError> {
        let mut conn = self.conn();
        let held: Option<String> = CLAIM
            .key(self.keys().cart_name(customer, name))
            .arg(order_id)
            .arg(stale.unwrap_or(""))
            .arg(chrono::Utc::now().timestamp_millis())
            .invoke_async(&mut conn)
            .await?;
        Ok(held.as_deref().map(NameClaim::parse))
    }

    /// Gives up `order_id`'s claim of a cart name (its create failed).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn release_cart_name(
        &self,
        customer: &str,
        name: &str,
        order_id: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: i64 = RELEASE
            .key(self.keys().cart_name(customer, name))
            .arg(order_id)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The order holding the claim of `customer`'s cart name `name`, if any.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn cart_name_holder(
        &self,
        customer: &str,
        name: &str,
    ) -> Result<Option<NameClaim>, StoreError> {
        let mut conn = self.conn();
        let held: Option<String> =
            redis::AsyncCommands::get(&mut conn, self.keys().cart_name(customer, name)).await?;
        Ok(held.as_deref().map(NameClaim::parse))
    }

    /// Records that request `request_id` (an updateOrder by cart name of `customer`) resolved to
    /// `order_id`, unless an earlier attempt recorded another: returns the recorded one.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when `token` no longer holds the customer's partition.
    pub async fn record_resolution(
        &self,
        customer: &str,
        request_id: &str,
        order_id: &str,
        ttl_secs: u64,
        token: &str,
    ) -> Result<String, StoreError> {
        let mut conn = self.conn();
        let partition = self.keys().partition(customer);
        let recorded: String = RESOLVE
            .key(self.keys().resolution(partition, request_id))
            .key(self.keys().lease(partition))
            .arg(token)
            .arg(order_id)
            .arg(ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        if recorded == "FENCED" {
            return Err(StoreError::Fenced { partition });
        }
        Ok(recorded)
    }

    /// The order a request was resolved to in partition `p`, if recorded.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn resolution(&self, p: u16, request_id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        Ok(redis::AsyncCommands::get(&mut conn, self.keys().resolution(p, request_id)).await?)
    }
}
