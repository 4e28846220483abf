//! Which partitions this daemon holds, with their fencing tokens (SPEC 6): the [`Ownership`]
//! handle that everything that writes asks for a token, and [`Ownership::tick`], one step of
//! the lease loop (renew what is held, hand over what is above the fair share, acquire free
//! leases up to it).
//!
//! Balance: every daemon beats in `<prefix>:daemons` and aims for its fair share,
//! `ceil(partitions / live daemons)`. It acquires only free leases (SET NX, epoch INCR). One
//! above its share *drains* its highest-numbered partitions first: it stops taking new work
//! for them (no new requests, no new rounds) but keeps their tokens so that commits already in
//! flight still land; one renewal interval later it releases them (compare-and-delete), and
//! the daemon that is short takes them on its next step.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::metrics::{LeaseChange, Metrics};
use crate::store::lease::LeaseStore;
use crate::store::{Confirmer, LeaseToken, Store, StoreError};

/// What the lease loop is configured with.
#[derive(Debug, Clone)]
pub struct OwnershipConfig {
    /// This daemon's id, the first half of its lease tokens (unique per process).
    pub daemon_id: String,
    /// How long a lease lives without renewal (`cluster.lease_ttl`).
    pub lease_ttl: Duration,
    /// How often held leases are renewed and free ones acquired (`cluster.renew_interval`).
    pub renew_interval: Duration,
}

impl OwnershipConfig {
    /// How long after a renewal was *sent* this daemon still trusts its lease: the TTL less one
    /// renewal interval, so it stops writing before Redis can hand the lease to another daemon
    /// (fencing refuses the writes of a daemon that still tries).
    pub fn trusted_for(&self) -> Duration {
        self.lease_ttl.saturating_sub(self.renew_interval)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The partitions this daemon holds. Cheap to clone (one shared inner value).
#[derive(Clone)]
pub struct Ownership {
    shared: Arc<Shared>,
}

struct Shared {
    config: OwnershipConfig,
    /// Confirms newly acquired leases with the replicas.
    confirmer: Confirmer,
    /// The leases' part of Redis, made once.
    leases: LeaseStore,
    partitions: u16,
    held: Mutex<BTreeMap<u16, Held>>,
    /// When the last step whose renewals Redis answered sent them (readiness).
    renewed: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone)]
struct Held {
    lease: LeaseToken,
    /// After this instant the lease may have run out in Redis: no more writes.
    trusted_until: Instant,
    /// Being handed over: no new work is taken for it, commits in flight still land, and the
    /// next step releases it.
    draining: bool,
}

impl Held {
    fn serves(&self, now: Instant) -> bool {
        !self.draining && self.trusted_until > now
    }
}

/// What one step of the lease loop changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    /// Partitions this daemon took (their overdue timers and outboxes are its job now).
    pub acquired: Vec<u16>,
    /// Of those, the ones that had no owner for longer than the lease TTL plus one renewal
    /// interval, with since when (Unix ms): payment grace missed meanwhile is deferred.
    pub orphaned: Vec<(u16, i64)>,
    /// Partitions it lost (renewal refused, or not renewed in time).
    pub lost: Vec<u16>,
    /// Partitions above its fair share it stopped taking work for (released next step).
    pub draining: Vec<u16>,
    /// Partitions it handed over (released after draining).
    pub released: Vec<u16>,
}

impl Tick {
    /// The partitions this daemon no longer writes to after this step.
    pub fn gone(&self) -> Vec<u16> {
        let mut gone = self.lost.clone();
        gone.extend(&self.released);
        gone
    }
}

/// A daemon's fair share of the partitions: `ceil(partitions / live daemons)` (SPEC 6).
pub fn fair_share(partitions: u16, live_daemons: usize) -> usize {
    usize::from(partitions).div_ceil(live_daemons.max(1))
}

/// Which held partitions to drain so that `serving` (ascending) keeps only `share`: the
/// highest-numbered ones (SPEC 10).
pub fn to_drain(serving: &[u16], share: usize) -> Vec<u16> {
    serving.iter().skip(share).copied().collect()
}

impl Ownership {
    /// A daemon that holds nothing yet.
    pub fn new(store: Store, config: OwnershipConfig, metrics: Arc<Metrics>) -> Ownership {
        let partitions = store.keys().partitions();
        Ownership {
            shared: Arc::new(Shared {
                config,
                leases: store.lease_store(),
                confirmer: store.confirmer(),
                partitions,
                held: Mutex::new(BTreeMap::new()),
                renewed: Mutex::new(None),
                metrics,
            }),
        }
    }

    /// How long ago the lease loop last renewed through Redis (`None`: never yet). The loop is
    /// healthy while this stays under the lease TTL.
    pub fn since_renewal(&self) -> Option<Duration> {
        let renewed = *self
            .shared
            .renewed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        renewed.map(|at| at.elapsed())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, Held>> {
        // Plain bookkeeping, valid after any panic elsewhere.
        self.shared
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// This daemon's id.
    pub fn daemon_id(&self) -> &str {
        &self.shared.config.daemon_id
    }

    /// The settings of the lease loop.
    pub fn config(&self) -> &OwnershipConfig {
        &self.shared.config
    }

    /// The fencing token for writes to partition `p`, while this daemon trusts its lease.
    pub fn token(&self, p: u16) -> Option<String> {
        let now = Instant::now();
        self.held()
            .get(&p)
            .filter(|h| h.trusted_until > now)
            .map(|h| h.lease.token.clone())
    }

    /// The fencing tokens of those of `partitions` this daemon still trusts.
    pub fn tokens(&self, partitions: &[u16]) -> Vec<(u16, String)> {
        partitions
            .iter()
            .filter_map(|&p| self.token(p).map(|t| (p, t)))
            .collect()
    }

    /// Whether this daemon takes new work for partition `p`: it holds and trusts the lease
    /// and is not handing the partition over.
    pub fn owns(&self, p: u16) -> bool {
        let now = Instant::now();
        self.held().get(&p).is_some_and(|h| h.serves(now))
    }

    /// The partitions this daemon takes new work for, ascending.
    pub fn owned(&self) -> Vec<u16> {
        let now = Instant::now();
        self.held()
            .iter()
            .filter(|(_, h)| h.serves(now))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Whether this daemon takes new work for every partition (it runs alone).
    pub fn owns_all(&self) -> bool {
        let now = Instant::now();
        let held = self.held();
        held.len() == usize::from(self.shared.partitions) && held.values().all(|h| h.serves(now))
    }

    /// How many partitions there are.
    pub fn partitions(&self) -> u16 {
        self.shared.partitions
    }

    /// A write to `p` was fenced: another daemon holds its lease now. Forgets it.
    pub fn fenced(&self, p: u16) {
        if self.held().remove(&p).is_some() {
            self.shared.metrics.lease_changes(LeaseChange::Lost, 1);
            tracing::warn!(
                partition = p,
                "a write was fenced: the partition's lease is lost"
            );
        }
    }

    /// One step of the lease loop (SPEC 6, 10): announces this daemon, renews every held
    /// lease (dropping those that were lost or could not be renewed in time), releases the
    /// partitions it drained since the last step, drains the highest-numbered ones above its
    /// fair share, and acquires free leases up to it.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails; held leases stay trusted until their deadline.
    pub async fn tick(&self) -> Result<Tick, StoreError> {
        let result = self.step().await;
        self.count(&result);
        result
    }

    /// Renews the leases held, nothing more (no heartbeat, no acquisition, no hand-over): the
    /// lease loop of a daemon that is stopping, so that its last commits land under live
    /// leases before it releases them.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn renew_only(&self) -> Result<Tick, StoreError> {
        let mut tick = Tick::default();
        let result = self.renew(&mut tick).await.map(|()| tick);
        self.count(&result);
        result
    }

    fn count(&self, result: &Result<Tick, StoreError>) {
        let m = &self.shared.metrics;
        if let Ok(tick) = result {
            m.lease_changes(LeaseChange::Acquired, tick.acquired.len());
            m.lease_changes(LeaseChange::Lost, tick.lost.len());
            m.lease_changes(LeaseChange::Released, tick.released.len());
        } else {
            m.redis_error();
        }
        m.set_partitions_owned(self.owned().len());
    }

    async fn step(&self) -> Result<Tick, StoreError> {
        let config = &self.shared.config;
        let leases = &self.shared.leases;
        let mut tick = Tick::default();
        // Announce this daemon (operators see the standbys too: `<prefix>:daemons`).
        leases.heartbeat(&config.daemon_id, config.ttl_ms()).await?;
        self.renew(&mut tick).await?;
        // Hand over what drained since the last step: its in-flight commits had one renewal
        // interval to land.
        let drained: Vec<LeaseToken> = {
            let mut map = self.held();
            let done: Vec<u16> = map
                .iter()
                .filter(|(_, h)| h.draining)
                .map(|(p, _)| *p)
                .collect();
            done.iter()
                .filter_map(|p| map.remove(p).map(|h| h.lease))
                .collect()
        };
        for lease in &drained {
            // Not trusted from here on, whatever the release's outcome.
            if leases.release_lease(lease).await? {
                tick.released.push(lease.partition);
            } else {
                tick.lost.push(lease.partition);
            }
        }
        let live = leases.live_daemons(config.ttl_ms()).await?.len();
        let share = fair_share(self.shared.partitions, live);
        let serving = self.owned();
        if serving.len() > share {
            let drain = to_drain(&serving, share);
            let mut map = self.held();
            for p in &drain {
                if let Some(h) = map.get_mut(p) {
                    h.draining = true;
                }
            }
            tick.draining = drain;
            return Ok(tick);
        }
        let mut missing = share - serving.len();
        if missing == 0 {
            return Ok(tick);
        }
        let candidates: Vec<u16> = {
            let map = self.held();
            (0..self.shared.partitions)
                .filter(|p| !map.contains_key(p))
                .collect()
        };
        let mut acquired = Vec::new();
        for p in leases.free_leases(&candidates).await? {
            if missing == 0 {
                break;
            }
            let sent = Instant::now();
            if let Some(lease) = leases
                .acquire_lease(p, &config.daemon_id, config.ttl_ms())
                .await?
            {
                acquired.push((lease, sent));
                missing -= 1;
            }
        }
        let confirmed = self.confirm_acquired(acquired).await;
        for (lease, sent) in confirmed {
            self.hold(lease, sent, &mut tick);
        }
        Ok(tick)
    }

    /// Of leases just acquired, those whose acquisition `redis.wait_replicas` replicas
    /// confirmed (SPEC 11.1: before the partition is used), all at once; the others are
    /// released again (a failover would forget them). All of them when nothing waits.
    async fn confirm_acquired(
        &self,
        acquired: Vec<(LeaseToken, Instant)>,
    ) -> Vec<(LeaseToken, Instant)> {
        let store = &self.shared.confirmer;
        let leases = &self.shared.leases;
        if acquired.is_empty() || !store.waits() {
            return acquired;
        }
        let held: Vec<(u16, String)> = acquired
            .iter()
            .map(|(l, _)| (l.partition, l.token.clone()))
            .collect();
        // Held leases were renewed before: a WAIT that waits for absent replicas may hold
        // this step up for at most half a renewal interval.
        let wait = self.shared.config.renew_interval / 2;
        let results = tokio::time::timeout(wait, store.confirm_many(&held))
            .await
            .unwrap_or_else(|_| {
                let w = store.replication().wait();
                held.iter()
                    .map(|_| {
                        Err(StoreError::Unconfirmed {
                            replicas: 0,
                            wanted: w.map_or(0, |w| w.replicas),
                            timeout_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        })
                    })
                    .collect()
            });
        let mut confirmed = Vec::new();
        let mut refused = Vec::new();
        for ((lease, sent), result) in acquired.into_iter().zip(results) {
            match result {
                Ok(()) => confirmed.push((lease, sent)),
                Err(e) => refused.push((lease, e)),
            }
        }
        if let Some((_, e)) = refused.first() {
            tracing::warn!(
                partitions = ?refused.iter().map(|(l, _)| l.partition).collect::<Vec<_>>(),
                error = %e,
                "lease acquisitions not confirmed by the replicas (redis.wait_replicas); released, tried again next step"
            );
        }
        for (lease, _) in refused {
            if let Err(e) = leases.release_lease(&lease).await {
                tracing::debug!(partition = lease.partition, error = %e, "cannot release an unconfirmed lease; it expires on its own");
            }
        }
        confirmed
    }

    /// Renews every lease held; those refused or not renewed in time are lost.
    async fn renew(&self, tick: &mut Tick) -> Result<(), StoreError> {
        let config = &self.shared.config;
        let leases = &self.shared.leases;
        let sent = Instant::now();
        let held: Vec<LeaseToken> = self.held().values().map(|h| h.lease.clone()).collect();
        let renewed = leases.renew_leases(&held, config.ttl_ms()).await;
        {
            let mut map = self.held();
            if let Ok(results) = &renewed {
                for (lease, still) in held.iter().zip(results) {
                    if *still {
                        if let Some(h) = map.get_mut(&lease.partition) {
                            h.trusted_until = sent + config.trusted_for();
                        }
                    } else if map.remove(&lease.partition).is_some() {
                        tick.lost.push(lease.partition);
                    }
                }
            }
            // Leases not renewed in time are gone, whatever Redis says later.
            let now = Instant::now();
            let expired: Vec<u16> = map
                .iter()
                .filter(|(_, h)| h.trusted_until <= now)
                .map(|(p, _)| *p)
                .collect();
            for p in expired {
                map.remove(&p);
                tick.lost.push(p);
            }
        }
        renewed?;
        *self
            .shared
            .renewed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sent);
        Ok(())
    }

    /// Holds a lease acquired (and confirmed) in this step, sent at `sent`.
    fn hold(&self, lease: LeaseToken, sent: Instant, tick: &mut Tick) {
        let config = &self.shared.config;
        let p = lease.partition;
        let trusted_until = sent + config.trusted_for();
        let gap_ms = u64::try_from((config.lease_ttl + config.renew_interval).as_millis())
            .unwrap_or(u64::MAX);
        if let Some(until) = lease.previous_until {
            let unowned = chrono::Utc::now().timestamp_millis() - until;
            if u64::try_from(unowned).is_ok_and(|u| u > gap_ms) {
                tick.orphaned.push((p, until));
            }
        }
        self.held().insert(
            p,
            Held {
                lease,
                trusted_until,
                draining: false,
            },
        );
        tick.acquired.push(p);
    }

    /// Releases every held lease at once (SIGTERM): another daemon takes over without waiting
    /// for the TTL. Returns how many were released.
    pub async fn release_all(&self) -> usize {
        if let Err(e) = self
            .shared
            .leases
            .leave(&self.shared.config.daemon_id)
            .await
        {
            tracing::warn!(error = %e, "cannot remove this daemon's heartbeat; it expires on its own");
        }
        let held: Vec<LeaseToken> = std::mem::take(&mut *self.held())
            .into_values()
            .map(|h| h.lease)
            .collect();
        let mut released = 0;
        for lease in &held {
            match self.shared.leases.release_lease(lease).await {
                Ok(true) => released += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(partition = lease.partition, error = %e, "cannot release a lease; it expires on its own");
                }
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of one partition's lease: Redis's side (SET NX PX, compare-and-renew, fencing
    /// compare) and three daemons that trust a lease for [`OwnershipConfig::trusted_for`] from
    /// when they *sent* the acquire or renewal. Requests take any time to reach Redis (slow
    /// networks, pauses), replies any time to come back.
    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            /// Daemon `d` sends a renew-or-acquire; Redis handles it `delay` ms later and the
            /// daemon hears back `back` ms after that.
            Tick { d: usize, delay: u64, back: u64 },
            /// Daemon `d` writes if it trusts its lease; Redis sees it `delay` ms later.
            Write { d: usize, delay: u64 },
            /// Daemon `d` hands its lease over (it drained): it stops trusting it when it sends
            /// the compare-and-delete, which Redis handles `delay` ms later.
            Release { d: usize, delay: u64 },
            /// Time passes.
            Wait { ms: u64 },
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (0..3usize, 0..1500u64, 0..1500u64).prop_map(|(d, delay, back)| Step::Tick {
                    d,
                    delay,
                    back
                }),
                (0..3usize, 0..1500u64).prop_map(|(d, delay)| Step::Write { d, delay }),
                (0..3usize, 0..1500u64).prop_map(|(d, delay)| Step::Release { d, delay }),
                (0..1500u64).prop_map(|ms| Step::Wait { ms }),
            ]
        }

        #[derive(Default, Debug)]
        struct Redis {
            lease: Option<(String, u64)>,
            epoch: u64,
        }

        impl Redis {
            fn value(&self, now: u64) -> Option<&str> {
                self.lease
                    .as_ref()
                    .filter(|(_, exp)| *exp > now)
                    .map(|(v, _)| v.as_str())
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn no_two_daemons_trust_one_partition_and_fencing_keeps_epochs_in_order(
                steps in proptest::collection::vec(step(), 1..60)
            ) {
                let config = OwnershipConfig {
                    daemon_id: String::new(),
                    lease_ttl: Duration::from_millis(1000),
                    renew_interval: Duration::from_millis(333),
                };
                let ttl = 1000u64;
                let trust = u64::try_from(config.trusted_for().as_millis()).unwrap();
                let mut redis = Redis::default();
                // Each daemon: (token, trusted from, trusted until), as far as it knows.
                let mut daemons: Vec<Option<(String, u64, u64)>> = vec![None; 3];
                let mut now = 0u64;
                let mut accepted: Vec<(u64, u64)> = Vec::new(); // (time, epoch)
                for s in steps {
                    match s {
                        Step::Wait { ms } => now += ms,
                        Step::Tick { d, delay, back } => {
                            let sent = now;
                            let at = sent + delay;
                            let token = daemons[d].as_ref().map(|h| h.0.clone());
                            let ok = match (&token, redis.value(at).map(str::to_string)) {
                                (Some(t), Some(v)) if *t == v => {
                                    redis.lease = Some((v, at + ttl));
                                    Some(t.clone())
                                }
                                (_, None) => {
                                    redis.epoch += 1;
                                    let t = format!("d{d}:{}", redis.epoch);
                                    redis.lease = Some((t.clone(), at + ttl));
                                    Some(t)
                                }
                                _ => None,
                            };
                            now = at + back;
                            daemons[d] = ok.map(|t| (t, now, sent + trust));
                        }
                        Step::Release { d, delay } => {
                            if let Some((token, _, _)) = daemons[d].take() {
                                let at = now + delay;
                                if redis.value(at) == Some(token.as_str()) {
                                    redis.lease = None;
                                }
                            }
                        }
                        Step::Write { d, delay } => {
                            if let Some((token, _, until)) = &daemons[d] {
                                if *until > now {
                                    let at = now + delay;
                                    if redis.value(at) == Some(token.as_str()) {
                                        let epoch = token.rsplit(':').next().unwrap().parse().unwrap();
                                        accepted.push((at, epoch));
                                    }
                                }
                            }
                        }
                    }
                    // Exclusive belief: the trust windows of different tokens never overlap.
                    let windows: Vec<(u64, u64, &str)> = daemons
                        .iter()
                        .flatten()
                        .filter(|(_, from, until)| from < until)
                        .map(|(t, from, until)| (*from, *until, t.as_str()))
                        .collect();
                    for (i, a) in windows.iter().enumerate() {
                        for b in &windows[i + 1..] {
                            prop_assert!(a.1 <= b.0 || b.1 <= a.0 || a.2 == b.2, "{a:?} and {b:?} both trusted");
                        }
                    }
                }
                // Fencing: once a write of epoch e is accepted, no older epoch writes again.
                accepted.sort();
                prop_assert!(accepted.windows(2).all(|w| w[0].1 <= w[1].1), "{accepted:?}");
            }
        }
    }

    #[test]
    fn shares_cover_every_partition_and_drains_take_the_highest() {
        for partitions in [1u16, 4, 64, 1024] {
            for live in 1..=10usize {
                let share = fair_share(partitions, live);
                assert!(
                    share * live >= usize::from(partitions),
                    "{partitions}/{live}"
                );
                assert!(share.saturating_sub(1) * live < usize::from(partitions));
            }
        }
        assert_eq!(fair_share(64, 0), 64, "alone when nobody else beats");
        assert_eq!(fair_share(64, 3), 22);
        assert_eq!(to_drain(&[1, 4, 9, 30], 2), vec![9, 30]);
        assert!(to_drain(&[1, 4], 2).is_empty());
    }

    #[test]
    fn a_lease_is_trusted_for_less_than_its_ttl() {
        let c = OwnershipConfig {
            daemon_id: "d".into(),
            lease_ttl: Duration::from_secs(10),
            renew_interval: Duration::from_millis(3333),
        };
        assert!(c.trusted_for() < c.lease_ttl);
        assert!(
            c.trusted_for() >= c.renew_interval,
            "a renewal comes before trust runs out"
        );
    }
}
