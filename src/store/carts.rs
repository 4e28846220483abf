//! Cart names across daemons (SPEC 10): `{pC}:cart:<customer>:<name>` claims a customer's cart
//! name for one order (SET NX, or taken over from a claim that no longer holds), and
//! `{pC}:resolve:<request id>` records which order an updateOrder by name was resolved to, so
//! its retries reach the same order. Both keys are in the customer's partition.

use super::{scripts, Keys, RedisConn, Store, StoreError};

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

/// Customers' cart names across daemons (SPEC 10). A narrow handle (a connection and the key names), made by
/// [`Store::cart_store`].
#[derive(Clone)]
pub struct CartStore {
    conn: RedisConn,
    keys: Keys,
}

impl Store {
    /// The handle of this part of Redis.
    pub fn cart_store(&self) -> CartStore {
        CartStore {
            conn: self.conn(),
            keys: self.keys().clone(),
        }
    }
}

impl CartStore {
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
        let mut conn = self.conn.clone();
        let held: Option<String> = scripts::CART_CLAIM
            .script()
            .key(self.keys.admin_keys().cart_name(customer, name))
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
        let mut conn = self.conn.clone();
        let _: i64 = scripts::CART_RELEASE
            .script()
            .key(self.keys.admin_keys().cart_name(customer, name))
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
        let mut conn = self.conn.clone();
        let held: Option<String> =
            redis::AsyncCommands::get(&mut conn, self.keys.admin_keys().cart_name(customer, name))
                .await?;
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
        let mut conn = self.conn.clone();
        let partition = self.keys.partition(customer);
        let recorded: String = scripts::CART_RESOLVE
            .script()
            .key(self.keys.admin_keys().resolution(partition, request_id))
            .key(self.keys.lease(partition))
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
        let mut conn = self.conn.clone();
        Ok(
            redis::AsyncCommands::get(&mut conn, self.keys.admin_keys().resolution(p, request_id))
                .await?,
        )
    }
}
