//! A private Redis Cluster on loopback: `masters` redis-servers started with
//! `--cluster-enabled yes` on free ports (never 6379), joined with
//! `redis-cli --cluster create`, ready once every node says `cluster_state:ok`. Killed on drop.
//! The benchmarks (`recur-bench burst --cluster`) and the integration tests use it; the tests
//! also start it TLS-only ([`LocalCluster::start_tls`]). With replicas
//! ([`LocalCluster::start_with_replicas`]) a node can be SIGKILLed, its replica promoted
//! (`CLUSTER FAILOVER TAKEOVER`) and the killed node started again (it rejoins as a replica of
//! the promoted one): the failover tests of `redis.wait_replicas` (SPEC 11.1).

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recur::store::{RedisAccess, RedisAddress, TlsOptions};

use super::{setup, BenchError};

/// A cluster node's bus port is its port + this (Redis's rule).
pub const BUS_PORT_OFFSET: u16 = 10_000;
/// Ports at or above this would have their bus port past 65535.
const PORT_LIMIT: u16 = 55_535;
/// How long a started node may take to answer PING.
const NODE_START: Duration = Duration::from_secs(10);
/// How long the nodes may take to agree on the slots after `--cluster create`.
const CLUSTER_READY: Duration = Duration::from_secs(30);
/// New ports are picked this many times when a node cannot bind its port (another process took
/// it between the check and the start).
const ATTEMPTS: usize = 5;

/// A running cluster of masters, with or without replicas.
pub struct LocalCluster {
    nodes: Vec<Node>,
    tls: Option<ClusterTls>,
    replicas: usize,
}

/// TLS for every node of a local cluster (clients, and the cluster bus with `tls-cluster yes`):
/// PEM files. Clients need no certificate of their own (`tls-auth-clients no`).
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// The nodes' certificate (valid for 127.0.0.1).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signed it.
    pub ca: PathBuf,
}

impl ClusterTls {
    /// How a client gets in: the CA.
    pub fn access(&self) -> RedisAccess {
        RedisAccess {
            tls: TlsOptions {
                ca_file: Some(self.ca.clone()),
                ..TlsOptions::default()
            },
            ..RedisAccess::default()
        }
    }
}

struct Node {
    /// `None` while it is killed ([`LocalCluster::kill_node`]).
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    pub master: bool,
    /// A replica's master's id.
    pub master_id: Option<String>,
    /// Whether the cluster counts it failed (`fail`, `fail?`) or it is not connected.
    pub failed: bool,
}

impl LocalCluster {
    /// Starts `masters` (at least 3, Redis's minimum for `--cluster create`) nodes with their
    /// data (append-only), `nodes.conf` and log under `dir`, and joins them.
    ///
    /// # Errors
    /// [`BenchError`] when redis-server or redis-cli cannot be run, or the cluster does not
    /// come up.
    pub async fn start(dir: &Path, masters: usize) -> Result<LocalCluster, BenchError> {
        Self::start_with(dir, masters, 0, None).await
    }

    /// [`LocalCluster::start`] with TLS-only nodes (`--port 0 --tls-port P --tls-cluster yes`):
    /// its URLs are `rediss://`, its address carries the CA.
    ///
    /// # Errors
    /// As [`LocalCluster::start`].
    pub async fn start_tls(
        dir: &Path,
        masters: usize,
        tls: ClusterTls,
    ) -> Result<LocalCluster, BenchError> {
        Self::start_with(dir, masters, 0, Some(tls)).await
    }

    /// [`LocalCluster::start`] with `replicas` replicas per master (`--cluster-replicas`),
    /// ready once every replica is synchronized.
    ///
    /// # Errors
    /// As [`LocalCluster::start`].
    pub async fn start_with_replicas(
        dir: &Path,
        masters: usize,
        replicas: usize,
    ) -> Result<LocalCluster, BenchError> {
        Self::start_with(dir, masters, replicas, None).await
    }

    async fn start_with(
        dir: &Path,
        masters: usize,
        replicas: usize,
        tls: Option<ClusterTls>,
    ) -> Result<LocalCluster, BenchError> {
        if masters < 3 {
            return Err(BenchError::Setup(format!(
                "a Redis Cluster needs at least 3 masters, not {masters}"
            )));
        }
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let ports = free_ports(masters * (1 + replicas))?;
            let mut cluster = LocalCluster {
                nodes: Vec::new(),
                tls: tls.clone(),
                replicas,
            };
            let mut started = true;
            for (i, &port) in ports.iter().enumerate() {
                let node_dir = dir.join(format!("node-{attempt}-{i}"));
                match Node::spawn(&node_dir, port, tls.as_ref()) {
                    Ok(node) => cluster.nodes.push(node),
                    Err(e) => {
                        last = e.to_string();
                        started = false;
                        break;
                    }
                }
            }
            if started {
                match cluster.wait_nodes().await {
                    Ok(()) => {
                        cluster.create().await?;
                        cluster.wait_ready().await?;
                        cluster.wait_replicas_online().await?;
                        return Ok(cluster);
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            // A port was taken meanwhile: kill what started and pick new ports.
            drop(cluster);
        }
        Err(BenchError::Setup(format!(
            "the Redis Cluster did not start after {ATTEMPTS} attempts: {last}"
        )))
    }

    /// The seed nodes, comma-separated (`redis.url` with `redis.cluster = true`).
    pub fn seeds(&self) -> String {
        self.node_urls().join(",")
    }

    /// The cluster as recur's address (with the CA when it is TLS-only).
    pub fn address(&self) -> RedisAddress {
        RedisAddress::cluster(self.node_urls()).with_access(self.access())
    }

    /// How a client gets in: nothing needed, or the CA of a TLS-only cluster.
    pub fn access(&self) -> RedisAccess {
        self.tls
            .as_ref()
            .map(ClusterTls::access)
            .unwrap_or_default()
    }

    /// Each node's own URL (for per-node commands: INFO, BGREWRITEAOF, CONFIG); `rediss://`
    /// when TLS-only (connect with [`LocalCluster::access`]).
    pub fn node_urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.nodes
            .iter()
            .map(|n| format!("{scheme}://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The running nodes' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Each node's process id, in [`LocalCluster::node_urls`]' order (`None`: killed).
    pub fn pids_by_node(&self) -> Vec<Option<u32>> {
        self.nodes
            .iter()
            .map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Stops every node (SIGTERM: each flushes its append-only file) and waits.
    pub async fn stop(mut self) {
        for node in &self.nodes {
            if let Some(child) = &node.child {
                signal(child.id(), libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &mut self.nodes {
            while let Some(child) = &mut node.child {
                if Instant::now() >= deadline || !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Drop kills what is left.
    }

    /// Every node as the first running node's `CLUSTER NODES` describes it.
    ///
    /// # Errors
    /// [`BenchError`] when no running node answers.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, BenchError> {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let url = &self.node_urls()[i];
            if let Some(text) = cluster_command(&RedisAccess::default(), url, "NODES").await {
                return Ok(text.lines().filter_map(parse_node).collect());
            }
        }
        Err(BenchError::Setup(
            "no cluster node answers CLUSTER NODES".into(),
        ))
    }

    /// The index (in [`LocalCluster::node_urls`]) of the node at `addr` (`127.0.0.1:<port>`).
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| format!("127.0.0.1:{}", n.port) == addr)
    }

    /// SIGKILLs node `i` (it stays down until [`LocalCluster::restart_node`]).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts killed node `i` again on its port and data dir (its `nodes.conf`: it rejoins
    /// the cluster; a master that was failed over meanwhile comes back as a replica of the
    /// one promoted in its place).
    ///
    /// # Errors
    /// [`BenchError`] when it cannot be started or does not answer.
    pub async fn restart_node(&mut self, i: usize) -> Result<(), BenchError> {
        let (dir, port) = (self.nodes[i].dir.clone(), self.nodes[i].port);
        let mut node = Node::spawn(&dir, port, self.tls.as_ref())?;
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        node.wait_answering(&self.access(), scheme).await?;
        self.nodes[i] = node;
        Ok(())
    }

    /// Promotes replica node `i` in place of its master at once (`CLUSTER FAILOVER
    /// TAKEOVER`: no agreement of the other masters needed, for a master that is dead), and
    /// waits until it is a master that every running node sees and the cluster is `ok`.
    ///
    /// # Errors
    /// [`BenchError`] when the failover is refused or does not settle within 30 s.
    pub async fn takeover(&self, i: usize) -> Result<(), BenchError> {
        let url = self.node_urls()[i].clone();
        let client = redis::Client::open(url.as_str()).map_err(setup("node URL"))?;
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(setup("connect to the replica"))?;
        let () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .arg("TAKEOVER")
            .query_async(&mut c)
            .await
            .map_err(setup("CLUSTER FAILOVER TAKEOVER"))?;
        let addr = format!("127.0.0.1:{}", self.nodes[i].port);
        let deadline = Instant::now() + CLUSTER_READY;
        loop {
            let mut settled = true;
            for (j, node) in self.nodes.iter().enumerate() {
                if node.child.is_none() {
                    continue;
                }
                let url = &self.node_urls()[j];
                let promoted = cluster_command(&RedisAccess::default(), url, "NODES")
                    .await
                    .map(|t| {
                        t.lines()
                            .filter_map(parse_node)
                            .any(|n| n.addr == addr && n.master)
                    })
                    .unwrap_or(false);
                let ok = cluster_info(&RedisAccess::default(), url)
                    .await
                    .is_some_and(|info| info.lines().any(|l| l.trim() == "cluster_state:ok"));
                settled &= promoted && ok;
            }
            if settled {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "{addr} did not become a master every node sees within {CLUSTER_READY:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Until every master has its replicas online (`INFO replication`), 30 s at most.
    ///
    /// # Errors
    /// [`BenchError`] when they are not.
    pub async fn wait_replicas_online(&self) -> Result<(), BenchError> {
        if self.replicas == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + CLUSTER_READY;
        loop {
            let masters: Vec<NodeInfo> = self
                .nodes()
                .await?
                .into_iter()
                .filter(|n| n.master && !n.failed)
                .collect();
            let mut all = true;
            for m in &masters {
                let online = replication_info(&format!("redis://{}", m.addr))
                    .await
                    .map_or(0, |info| {
                        info.lines()
                            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                            .count()
                    });
                all &= online >= self.replicas;
            }
            if all && !masters.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "the cluster's replicas are not all online after {CLUSTER_READY:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_nodes(&mut self) -> Result<(), BenchError> {
        let access = self.access();
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        for node in &mut self.nodes {
            node.wait_answering(&access, scheme).await?;
        }
        Ok(())
    }

    async fn create(&self) -> Result<(), BenchError> {
        let mut cmd = tokio::process::Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port));
        }
        if let Some(tls) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        // redis-cli waits for the nodes to meet for as long as it takes: bounded here (nodes
        // whose cluster bus cannot connect would never meet).
        let replicas = self.replicas.to_string();
        let run = cmd
            .args(["--cluster-replicas", replicas.as_str(), "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(CLUSTER_READY, run)
            .await
            .map_err(|_| {
                BenchError::Setup(format!(
                    "redis-cli --cluster create did not finish within {CLUSTER_READY:?}"
                ))
            })?
            .map_err(setup(
                "run redis-cli --cluster create (is redis-cli installed?)",
            ))?;
        if !out.status.success() {
            return Err(BenchError::Setup(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Until every node sees every slot assigned, every node known, and says `ok`.
    async fn wait_ready(&self) -> Result<(), BenchError> {
        let deadline = Instant::now() + CLUSTER_READY;
        let want_nodes = format!("cluster_known_nodes:{}", self.nodes.len());
        let access = self.access();
        for url in self.node_urls() {
            loop {
                let info = cluster_info(&access, &url).await.unwrap_or_default();
                let ok = [
                    "cluster_state:ok",
                    "cluster_slots_assigned:16384",
                    &want_nodes,
                ]
                .iter()
                .all(|line| info.lines().any(|l| l.trim() == *line));
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(BenchError::Setup(format!(
                        "the cluster node {url} is not ready after {CLUSTER_READY:?}: {info}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                if matches!(child.try_wait(), Ok(None)) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

impl Node {
    fn spawn(dir: &Path, port: u16, tls: Option<&ClusterTls>) -> Result<Node, BenchError> {
        std::fs::create_dir_all(dir).map_err(setup("cluster node dir"))?;
        let mut cmd = Command::new("redis-server");
        match tls {
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
            // The cluster bus (port + 10000) speaks TLS too, and the nodes announce their TLS
            // port in the slot map and in redirects.
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(dir.join("nodes.conf"))
            .args(["--cluster-node-timeout", "5000"])
            // A replica synchronizes at once (the default waits 5 s for more replicas).
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "yes", "--save", "", "--daemonize", "no"])
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(setup("spawn redis-server (is it installed?)"))?;
        Ok(Node {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        })
    }

    async fn wait_answering(
        &mut self,
        access: &RedisAccess,
        scheme: &str,
    ) -> Result<(), BenchError> {
        let url = format!("{scheme}://127.0.0.1:{}", self.port);
        let deadline = Instant::now() + NODE_START;
        while Instant::now() < deadline {
            let exited = match &mut self.child {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(BenchError::Setup(format!(
                    "redis-server on port {} exited ({status}): {}",
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            if let Ok(client) = access.client(&url) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
                    if pong.is_ok() {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(BenchError::Setup(format!(
            "redis-server on port {} did not answer within {NODE_START:?}",
            self.port
        )))
    }
}

async fn cluster_info(access: &RedisAccess, url: &str) -> Option<String> {
    cluster_command(access, url, "INFO").await
}

async fn cluster_command(access: &RedisAccess, url: &str, sub: &str) -> Option<String> {
    let client = access.client(url).ok()?;
    let mut c = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("CLUSTER").arg(sub).query_async(&mut c),
    )
    .await
    .ok()?
    .ok()
}

async fn replication_info(url: &str) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let mut c = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .ok()
}

/// One line of `CLUSTER NODES`: `<id> <ip:port@bus> <flags> <master> ...`.
fn parse_node(line: &str) -> Option<NodeInfo> {
    let mut fields = line.split_whitespace();
    let id = fields.next()?.to_string();
    let addr = fields.next()?.split('@').next()?.to_string();
    let flags: Vec<&str> = fields.next()?.split(',').collect();
    let master_id = fields.next()?;
    let link = line.split_whitespace().nth(7).unwrap_or("connected");
    Some(NodeInfo {
        id,
        addr,
        master: flags.contains(&"master"),
        master_id: (master_id != "-").then(|| master_id.to_string()),
        failed: flags.iter().any(|f| f.starts_with("fail")) || link != "connected",
    })
}

/// `n` distinct loopback ports below 55535, none 6379, each with its bus port (+10000) free too
/// and clear of the others.
fn free_ports(n: usize) -> Result<Vec<u16>, BenchError> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    let mut taken: HashSet<u16> = HashSet::new();
    for _ in 0..1000 {
        if ports.len() == n {
            break;
        }
        let port = bind_any()?;
        let bus = port.wrapping_add(BUS_PORT_OFFSET);
        let usable = port < PORT_LIMIT
            && port != 6379
            && bus != 6379
            && !taken.contains(&port)
            && !taken.contains(&bus)
            && TcpListener::bind(("127.0.0.1", bus)).is_ok();
        if usable {
            ports.push(port);
            taken.insert(port);
            taken.insert(bus);
        }
    }
    if ports.len() == n {
        Ok(ports)
    } else {
        Err(BenchError::Setup(format!(
            "no {n} free loopback ports with free bus ports"
        )))
    }
}

fn bind_any() -> Result<u16, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(setup("free port"))?;
    Ok(listener.local_addr().map_err(setup("free port"))?.port())
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: signalling our own child process by pid.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_leave_room_for_their_bus_ports_and_never_6379() {
        let ports = free_ports(3).expect("free ports");
        assert_eq!(ports.len(), 3);
        let mut all = HashSet::new();
        for p in &ports {
            assert!(*p < PORT_LIMIT && *p != 6379, "{p}");
            assert!(
                all.insert(*p) && all.insert(p + BUS_PORT_OFFSET),
                "{ports:?}"
            );
        }
    }
}
