//! The node: its identity, its connections to peers, and its processes.
//!
//! [`Node`] is shared by every task. It is a platform for processes and knows nothing of what
//! they do: anything implementing [`Process`] can be registered under a name or spawned, and
//! gets what peers send to its pid. [`Node::new`] builds a node without sockets (for unit tests
//! and in-process use: local processes talk to each other through it); [`Node::start`] also
//! binds the distribution port, makes sure an EPMD is there (running an embedded one if allowed
//! and needed), registers, and accepts connections.
//!
//! [`connection`] runs each peer connection, [`dispatch`] routes what arrives, [`process`] keeps
//! the local processes with their monitors and links, [`signals`] sends messages, exits and
//! monitors to local and remote processes alike, [`genserver`] speaks the `gen_server`
//! call/cast conventions, and [`net_kernel`] answers pings.

pub mod connection;
pub mod dispatch;
pub mod genserver;
pub mod mailbox;
pub mod net_kernel;
pub mod process;
pub mod signals;

pub use mailbox::{Mailbox, Signal};
pub use process::Process;

use crate::term::{Atom, Ref};
use crate::wire::dist::FrameWriter;
use crate::wire::epmd::{self, EpmdServer, Registration};
use crate::wire::tls::DistTls;
use connection::Conn;
use erl_dist::node::{LocalNode, NodeName};
use parking_lot::{Mutex, RwLock};
use process::ProcessTable;
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the node finds EPMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EpmdMode {
    /// Use the running EPMD; start an embedded one if none answers.
    Auto,
    /// Use the running EPMD; fail if none answers.
    External,
    /// Always run the embedded EPMD (fails if the port is taken; port 0 takes any free port).
    Embedded,
}

/// Everything needed to start a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Full node name, `name@host`.
    pub name: NodeName,
    /// The magic cookie.
    pub cookie: String,
    /// Distribution port (0: any free port).
    pub port: u16,
    /// Address the distribution port binds to.
    pub bind: std::net::IpAddr,
    /// EPMD port.
    pub epmd_port: u16,
    /// How to find EPMD.
    pub epmd_mode: EpmdMode,
    /// A peer silent for this long is disconnected; ticks go out every quarter of it.
    pub net_ticktime: Duration,
    /// How long a connection's reader keeps polling for input before it sleeps.
    pub busy_poll: Duration,
    /// TLS distribution (`inet_tls`), or plain TCP (`inet_tcp`) when `None`.
    pub tls: Option<DistTls>,
    /// What a peer may make the node allocate.
    pub limits: crate::wire::Limits,
}

impl NodeConfig {
    /// A configuration with the defaults of `ash-gen-server start`: any free port on
    /// 127.0.0.1, the EPMD on its usual port (embedded if none runs), a 60 s `net_ticktime`,
    /// 100 µs of busy polling, plain TCP, the default [`crate::wire::Limits`].
    pub fn new(name: NodeName, cookie: String) -> NodeConfig {
        NodeConfig {
            name,
            cookie,
            port: 0,
            bind: std::net::IpAddr::from([127, 0, 0, 1]),
            epmd_port: epmd::DEFAULT_EPMD_PORT,
            epmd_mode: EpmdMode::Auto,
            net_ticktime: Duration::from_secs(60),
            busy_poll: Duration::from_micros(100),
            tls: None,
            limits: crate::wire::Limits::default(),
        }
    }
}

/// A running node.
pub struct Node {
    /// Startup configuration.
    pub config: NodeConfig,
    /// The node name as an atom.
    pub name_atom: Atom,
    /// This incarnation's creation, from EPMD.
    pub creation: u32,
    local: LocalNode,
    conns: RwLock<FxHashMap<String, Arc<Conn>>>,
    connecting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Local processes, monitors and links.
    pub processes: ProcessTable,
    node_down: Mutex<Vec<NodeDownHook>>,
    refs: AtomicU64,
    conn_ids: AtomicU64,
    phase: tokio::sync::watch::Sender<Phase>,
    /// Peers this node neither connects to nor accepts (see [`Node::isolate`]).
    isolated_from: RwLock<std::collections::HashSet<String>>,
}

/// Where the node is in its life; connections watch it to drain at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving.
    Running,
    /// Shutting down: readers serve what has arrived, then stop reading.
    Drain,
    /// Shutting down, every reader done: writers write out what is queued, then close.
    Flush,
}

/// Called with the name of a peer whose connection ended.
pub type NodeDownHook = Box<dyn Fn(&Arc<Node>, &str) + Send + Sync>;

/// A started node and its background tasks.
pub struct RunningNode {
    /// The node.
    pub node: Arc<Node>,
    /// The distribution port actually bound.
    pub port: u16,
    /// Whether this process runs the EPMD it registered with.
    pub embedded_epmd: bool,
    tasks: Vec<JoinHandle<()>>,
    _registration: Registration,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The distribution port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// EPMD is missing or refused the registration.
    #[error(transparent)]
    Epmd(#[from] epmd::EpmdError),
    /// The node name does not fit in the atom table.
    #[error("the node name cannot be an atom: {0}")]
    Name(#[from] crate::term::AtomTableFull),
    /// The embedded EPMD could not start.
    #[error("cannot start the embedded EPMD on port {port}: {source}")]
    EmbeddedEpmd {
        /// The EPMD port.
        port: u16,
        /// The error.
        source: std::io::Error,
    },
}

impl Node {
    /// A node without sockets: its processes can talk to each other, and it can dial peers,
    /// but nobody can connect to it. `creation` tells this incarnation's pids apart from an
    /// earlier one's. Fails only when the name does not fit in an atom.
    pub fn new(config: NodeConfig, creation: u32) -> Result<Arc<Node>, crate::term::AtomTableFull> {
        let name_atom = Atom::new(&config.name.to_string())?;
        let local = crate::wire::handshake::local_node(&config.name, creation);
        let node = Arc::new(Node {
            processes: ProcessTable::new(name_atom, creation),
            name_atom,
            creation,
            local,
            conns: RwLock::new(FxHashMap::default()),
            connecting: Mutex::new(HashMap::new()),
            node_down: Mutex::new(Vec::new()),
            refs: AtomicU64::new(1),
            conn_ids: AtomicU64::new(1),
            phase: tokio::sync::watch::Sender::new(Phase::Running),
            isolated_from: RwLock::new(std::collections::HashSet::new()),
            config,
        });
        net_kernel::register(&node);
        Ok(node)
    }

    /// Starts a node: EPMD, listen, register, accept connections.
    pub async fn start(config: NodeConfig) -> Result<RunningNode, StartError> {
        Self::start_with(config, |_| {}).await
    }

    /// [`Node::start`], calling `setup` with the node before it accepts connections: processes
    /// registered there are in place for the first peer that calls.
    pub async fn start_with(
        mut config: NodeConfig,
        setup: impl FnOnce(&Arc<Node>),
    ) -> Result<RunningNode, StartError> {
        let mut tasks = Vec::new();
        let mut embedded_epmd = false;
        let run_embedded = match config.epmd_mode {
            EpmdMode::Embedded => true,
            EpmdMode::External => false,
            EpmdMode::Auto => !epmd::is_running(config.epmd_port).await,
        };
        if run_embedded {
            match EpmdServer::bind(config.epmd_port).await {
                Ok(server) => {
                    // Port 0 asks for any free port (tests use that): the node registers there.
                    config.epmd_port = server.port();
                    tracing::info!(
                        port = config.epmd_port,
                        "no EPMD running: started an embedded one"
                    );
                    tasks.push(tokio::spawn(server.run()));
                    embedded_epmd = true;
                }
                // Someone else started one in the meantime: use it.
                Err(e)
                    if config.epmd_mode == EpmdMode::Auto
                        && e.kind() == std::io::ErrorKind::AddrInUse => {}
                Err(source) => {
                    return Err(StartError::EmbeddedEpmd {
                        port: config.epmd_port,
                        source,
                    });
                }
            }
        }
        // EPMD first, so the distribution port (any free one by default) cannot take its port.
        let addr = SocketAddr::new(config.bind, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(config.port);
        let registration = epmd::register(config.epmd_port, config.name.name(), port).await?;
        let creation = registration.creation;

        let node = Node::new(config, creation)?;
        setup(&node);
        tasks.push(tokio::spawn(connection::accept_loop(
            node.clone(),
            listener,
        )));
        tracing::info!(node = %node.config.name, port, creation, "node started");
        Ok(RunningNode {
            node,
            port,
            embedded_epmd,
            tasks,
            _registration: registration,
        })
    }

    /// The handshake identity of this node.
    pub fn local_node(&self) -> LocalNode {
        self.local.clone()
    }

    /// A fresh reference made by this node.
    pub fn make_ref(&self) -> Ref {
        let n = self.refs.fetch_add(1, Ordering::Relaxed);
        Ref::new(
            self.name_atom,
            self.creation,
            &[
                (n & 0x3_ffff) as u32,
                (n >> 18) as u32,
                rand::random::<u32>(),
            ],
        )
    }

    /// Watches the node's [`Phase`].
    pub fn phase(&self) -> tokio::sync::watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// The number of live connections.
    pub fn conn_count(&self) -> usize {
        self.conns.read().len()
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The connection to `peer` (a full node name), if there is one.
    pub fn conn(&self, peer: &str) -> Option<Arc<Conn>> {
        self.conns.read().get(peer).cloned()
    }

    /// Names of the connected peers.
    pub fn peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.conns.read().keys().cloned().collect();
        peers.sort();
        peers
    }

    /// Registers a new connection, replacing (and cleaning up after) an older one to the same
    /// peer, as happens when a peer restarts before its old connection timed out.
    pub(crate) fn add_conn(self: &Arc<Self>, conn: Arc<Conn>) {
        let old = self.conns.write().insert(conn.peer.clone(), conn.clone());
        if let Some(old) = old {
            tracing::info!(peer = %old.peer, "replacing an older connection from the same peer");
            old.close();
            self.peer_gone(&old.peer);
        }
    }

    /// Removes a connection that ended, unless it was already replaced.
    pub(crate) fn remove_conn(self: &Arc<Self>, conn: &Conn) {
        let removed = {
            let mut conns = self.conns.write();
            match conns.get(&conn.peer) {
                Some(current) if current.id == conn.id => conns.remove(&conn.peer).is_some(),
                _ => false,
            }
        };
        if removed {
            self.peer_gone(&conn.peer);
        }
    }

    pub(crate) fn peer_gone(self: &Arc<Self>, peer: &str) {
        self.node_down_signals(peer);
        for hook in self.node_down.lock().iter() {
            hook(self, peer);
        }
    }

    /// Calls `hook` with the name of every peer whose connection ends from now on (as
    /// `net_kernel:monitor_nodes/1`).
    pub fn on_node_down(&self, hook: NodeDownHook) {
        self.node_down.lock().push(hook);
    }

    /// Connects to `peer` unless already connected.
    pub async fn connect(
        self: &Arc<Self>,
        peer: &NodeName,
    ) -> Result<(), connection::ConnectError> {
        let key = peer.to_string();
        if self.conn(&key).is_some() {
            return Ok(());
        }
        let gate = self
            .connecting
            .lock()
            .entry(key.clone())
            .or_default()
            .clone();
        let _guard = gate.lock().await;
        if self.conn(&key).is_some() {
            return Ok(());
        }
        connection::connect(self.clone(), peer).await
    }

    /// Writes frames to `peer`, if connected. Returns whether they were queued.
    pub fn write_to(&self, peer: Atom, write: impl FnOnce(&mut FrameWriter)) -> bool {
        match self.conn(peer.as_str()) {
            Some(conn) => conn.write(write),
            None => false,
        }
    }

    /// [`Node::write_to`], written to the socket from the calling task
    /// ([`connection::Conn::write_now`]).
    pub fn write_to_now(&self, peer: Atom, write: impl FnOnce(&mut FrameWriter)) -> bool {
        match self.conn(peer.as_str()) {
            Some(conn) => conn.write_now(write),
            None => false,
        }
    }

    /// Cuts this node off from `peers` (full node names) until [`Node::heal`]: their
    /// connections close, and neither side can connect again (this node does not dial them and
    /// refuses their handshakes) — a network partition between this node and them, made on
    /// loopback, for fault-injection tests. Replaces any earlier set.
    pub fn isolate(&self, peers: impl IntoIterator<Item = String>) {
        let peers: std::collections::HashSet<String> = peers.into_iter().collect();
        *self.isolated_from.write() = peers.clone();
        for peer in &peers {
            if let Some(conn) = self.conn(peer) {
                tracing::warn!(%peer, "isolated from a peer: closing its connection");
                conn.close();
            }
        }
    }

    /// Ends [`Node::isolate`]: every peer may connect again.
    pub fn heal(&self) {
        self.isolated_from.write().clear();
    }

    /// Whether this node is cut off from `peer` by [`Node::isolate`].
    pub fn is_isolated_from(&self, peer: &str) -> bool {
        self.isolated_from.read().contains(peer)
    }

    /// Closes every connection (used at shutdown).
    pub fn close_all(&self) {
        for conn in self.conns.read().values() {
            conn.close();
        }
    }
}

/// This process's resident memory, from `/proc` (Linux), if it can be read.
pub fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl RunningNode {
    /// Stops gracefully: unregisters from EPMD and stops accepting, then drains every
    /// connection — each reads and serves what its peer has already sent, every reply those
    /// calls produce is written out, then the connection closes (once the peer has closed its
    /// side, or gone quiet, so that no reset costs it replies it has not read). A call the
    /// node received before the shutdown reached its connection is answered; one sent later
    /// finds the connection closed (the caller sees the node go down). Whatever is left after
    /// `timeout` is closed anyway.
    pub async fn shutdown(self, timeout: Duration) {
        let RunningNode {
            node,
            tasks,
            _registration,
            ..
        } = self;
        drop(_registration);
        for task in &tasks {
            task.abort();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let conns_before = node.conn_count();
        node.phase.send_replace(Phase::Drain);
        let all_read = || node.conns.read().values().all(|c| c.read_done());
        while !all_read() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        node.phase.send_replace(Phase::Flush);
        while node.conn_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let left = node.conn_count();
        if left > 0 {
            tracing::warn!(
                connections = left,
                "shutdown timeout: closing connections not drained"
            );
            node.close_all();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(node = %node.config.name, drained = conns_before - left.min(conns_before), "node stopped");
    }
}
