//! The cluster of Rust nodes (`start --cluster`): every member holds a replica of the records,
//! kept identical by Raft (`openraft`), and any member serves any request.
//!
//! - [`types`]: what the replicated log carries (protocol requests) and answers (replies).
//! - [`log_store`] and [`state_machine`]: the log, and applying it to the member's own record
//!   service ([`state_machine::RECORDS_NAME`]), so the record service knows nothing of Raft.
//!   With `--data-dir` the log and the vote are kept on disk and [`identity`] keeps the
//!   member's Raft id: a restarted member is the same member, rebuilds its records by applying
//!   its latest [`snapshot`] and the log after it again, catches up with the leader and counts
//!   again.
//! - [`snapshot`]: the records captured every `--snapshot-every` entries, so the log stays
//!   bounded; a member that joins or fell behind receives one.
//! - [`answer`]: the endpoint's name and the answers that send a request to the leader.
//! - [`network`] and [`endpoint`]: Raft's messages as distribution messages between the
//!   members' [`answer::ENDPOINT_NAME`] processes: no other transport or port.
//! - [`router`]: the `ash_gen_server` process of a member: writes go through the log, reads to
//!   the leader after a linearizability check, members forward to the leader.
//! - [`expiry`]: only the leader's timers act; expired records leave every replica alike.
//! - [`read_lease`]: the leader serves reads from its own records while a lease holds.
//! - [`record_pids`]: record pids live on the leader; another member leading, they end with
//!   `{shutdown, {moved, Leader}}` (a pid's calls go through the router, writes through the log).
//! - [`metrics`]: the member's cluster gauges (leader, members, health, replication lag).
//! - [`view`]: what the member's Raft shows of its group (members, voters, caught up, gone).
//! - [`membership`]: forming the cluster (`--join`), who votes (rendezvous over the members,
//!   [`placement`]), leaving it on SIGTERM.
//! - [`convert`]: a single node joined by another becomes a member, its records with it.
//! - [`data_dir`]: a member's Raft files in its data directory, removed for a new instance or
//!   set aside by [`recover`].
//! - [`recover`]: a group that lost a majority of its voters for good is formed again from
//!   the copy one member holds (`ash-gen-server recover`, an operator's unsafe last resort).
//! - [`fanout`]: a multi-record request (query, aggregate, update_where, destroy_where) sent to
//!   every shard and the shards' replies combined into the single node's reply.
//! - [`holders`]: with several groups, a group other than 0 is held by `--replicas` members
//!   only (rendezvous hashing over group 0's members), moved when they change.
//!
//! - [`shards`]: with `--shards S` (S > 1) the records are split into S Raft groups, each
//!   this module's machinery once ([`ClusterOptions::group`], [`Names::of`]); the front router
//!   registered as `ash_gen_server` sends each request to its record's group, or to every
//!   group ([`fanout`]), and combines their replies.
//!
//! With `--shards 1` (the default) the records form one Raft group, named as ever.

pub mod answer;
pub mod convert;
pub mod data_dir;
pub mod endpoint;
pub mod expiry;
pub mod fanout;
pub mod holders;
pub mod identity;
pub mod log_store;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod placement;
pub mod read_lease;
pub mod record_pids;
pub mod recover;
pub mod role;
pub mod router;
pub mod settings;
pub mod shards;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod view;

use crate::node::Node;
use crate::storage::FsyncPolicy;
use crate::term::{Atom, Value};
use erl_dist::node::NodeName;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use types::{Member, NodeId, Raft};

/// How a member is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Members to join (any one that answers is enough).
    pub join: Vec<NodeName>,
    /// How many members hold the records (voters); the others are learners.
    pub replicas: usize,
    /// Milliseconds between heartbeats; elections start after 4 to 8 of them are missed.
    pub heartbeat_ms: u64,
    /// Keep the member's Raft id, vote and log here (`--data-dir`); in memory when `None`.
    pub data_dir: Option<PathBuf>,
    /// When the log in `data_dir` is flushed to the disk.
    pub fsync: FsyncPolicy,
    /// Entries between two snapshots (the log before a snapshot is dropped, but for a tenth
    /// of this kept for members a little behind).
    pub snapshot_every: u64,
    /// How long a member that does not vote may be unreachable before the leader removes it
    /// (`--remove-lost-after`; group 0: [`membership::keep_voters`]).
    pub remove_lost_after: Duration,
    /// The record service already holds records this member adopts (a single node becoming a
    /// member, [`convert`]): the router takes the name `ash_gen_server` over from the record
    /// service (which is registered as [`state_machine::RECORDS_NAME`] in the same step), and
    /// the member admits nobody until [`convert`] has put the records in a snapshot.
    pub adopt: bool,
    /// Which Raft group this is: it names the member's processes ([`Names::of`]) and ranks
    /// the members that vote in it ([`placement::replicas_of`]). Group 0 is the records' one
    /// group of today's layout.
    pub group: u32,
    /// How many Raft groups the records are split into (`--shards`, 1 by default). With more
    /// than one, group 0's router is not `ash_gen_server` ([`Names::of`]): that name is the
    /// front router's ([`shards`]).
    pub shards: u32,
}

/// The registered names of one Raft group's processes on a member: the endpoint other
/// members call ([`endpoint`]), the record service the group's state machine applies to
/// ([`state_machine`]) and the router that serves the group's requests ([`router`]). Group 0
/// has the names of a member of one group (`ash_gen_server_raft`, `ash_gen_server_records`,
/// `ash_gen_server`); group `G` adds `_G` to the first two and is served by
/// `ash_gen_server_group_G`. With several groups (`sharded`), group 0 is served by
/// `ash_gen_server_group_0`, and `ash_gen_server` is the front router ([`shards`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The endpoint's name.
    pub endpoint: String,
    /// The record service's name.
    pub records: String,
    /// The router's name.
    pub router: String,
}

impl Names {
    /// The names of group `group`'s processes; `sharded` when the records are split into more
    /// than one group.
    pub fn of(group: u32, sharded: bool) -> Names {
        if group == 0 && !sharded {
            return Names {
                endpoint: answer::ENDPOINT_NAME.to_string(),
                records: state_machine::RECORDS_NAME.to_string(),
                router: crate::protocol::SERVER_NAME.to_string(),
            };
        }
        if group == 0 {
            return Names {
                endpoint: answer::ENDPOINT_NAME.to_string(),
                records: state_machine::RECORDS_NAME.to_string(),
                router: format!("{}_group_0", crate::protocol::SERVER_NAME),
            };
        }
        Names {
            endpoint: format!("{}_{group}", answer::ENDPOINT_NAME),
            records: format!("{}_{group}", state_machine::RECORDS_NAME),
            router: format!("{}_group_{group}", crate::protocol::SERVER_NAME),
        }
    }
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            join: Vec::new(),
            replicas: 3,
            heartbeat_ms: 100,
            data_dir: None,
            fsync: FsyncPolicy::Interval,
            snapshot_every: 20_000,
            remove_lost_after: Duration::from_secs(300),
            adopt: false,
            group: 0,
            shards: 1,
        }
    }
}

/// Why the member could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A process name is taken.
    #[error("the name {0} is already registered on this node")]
    NameTaken(String),
    /// Raft would not start.
    #[error("raft: {0}")]
    Raft(String),
    /// The data directory cannot be used.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The log in the data directory cannot be read or written.
    #[error(transparent)]
    Log(#[from] log_store::LogStoreError),
    /// The snapshot in the data directory cannot be read.
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
}

/// A watch of a member's Raft server metrics (its vote, role, leader and membership) that
/// follows a [`Cluster::reset`] ([`Cluster::watch`]). Not the full metrics: those change with
/// every entry appended, committed and applied, and each change would wake every watcher.
pub struct MetricsWatch {
    generation: u64,
    metrics: tokio::sync::watch::Receiver<openraft::metrics::RaftServerMetrics<NodeId, Member>>,
}

impl Instance {
    /// Opens the group's Raft instance on `node` over `records`: from the data directory when
    /// there is one (`fresh`: emptied first, for a new instance with a new id).
    async fn open(
        node: &Arc<Node>,
        records: &Arc<crate::record::RecordService>,
        options: &ClusterOptions,
        names: &Names,
        remembered: &Arc<parking_lot::Mutex<state_machine::Remembered>>,
        fresh: bool,
    ) -> Result<Instance, ClusterError> {
        let mut flush = None;
        if fresh {
            // A new instance knows nothing of the group yet: the ids come with its snapshot.
            remembered.lock().clear();
        }
        let (id, log, reopened) = match &options.data_dir {
            Some(dir) => {
                if fresh {
                    // Only the group's own Raft files: group 0's directory also holds the
                    // cluster's settings and the other groups' directories.
                    data_dir::remove(dir).map_err(|e| {
                        ClusterError::Raft(format!("cannot empty {}: {e}", dir.display()))
                    })?;
                }
                let id =
                    identity::load_or_create(dir, &node.config.name.to_string(), options.adopt)?;
                let (log, journal, reopened) = log_store::LogStore::open(dir, options.fsync)?;
                tracing::info!(
                    dir = %dir.display(),
                    id,
                    fsync = ?options.fsync,
                    entries = reopened.entries,
                    committed = ?reopened.committed,
                    cut_bytes = reopened.cut_bytes,
                    "opened the raft log in the data directory"
                );
                if options.fsync == FsyncPolicy::Interval {
                    flush = Some(tokio::spawn(crate::storage::journal::flush_every_interval(
                        journal,
                    )));
                }
                (id, log, Some(reopened))
            }
            None => (
                rand::random::<u64>() >> 1,
                log_store::LogStore::default(),
                None,
            ),
        };
        let config = openraft::Config {
            cluster_name: "ash_gen_server".into(),
            heartbeat_interval: options.heartbeat_ms,
            election_timeout_min: options.heartbeat_ms * 4,
            election_timeout_max: options.heartbeat_ms * 8,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(options.snapshot_every),
            max_in_snapshot_log_to_keep: options.snapshot_every / 10,
            // A snapshot goes in chunks of 1 MiB; installing the last one (the records made
            // again) may take a while.
            snapshot_max_chunk_size: 1 << 20,
            install_snapshot_timeout: 30_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let snapshots = Arc::new(snapshot::SnapshotStore::new(options.data_dir.as_deref()));
        let state_machine = state_machine::StateMachine::new(
            node,
            records,
            &names.records,
            snapshots.clone(),
            remembered.clone(),
        )?;
        let raft = Raft::new(
            id,
            Arc::new(config),
            network::Network {
                node: node.clone(),
                endpoint: names.endpoint.clone(),
            },
            log,
            state_machine,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(Instance {
            id,
            raft,
            snapshots,
            reopened,
            flush,
        })
    }
}

/// One run of a member's Raft group: its Raft id, core and snapshots. A member that stops
/// holding a group ([`holders`]) starts a new instance of it, with a new id and nothing in it
/// ([`Cluster::reset`]).
pub struct Instance {
    /// The member's Raft id in the group (new for each instance, kept in the data directory
    /// with one).
    pub id: NodeId,
    /// The Raft core.
    pub raft: Raft,
    /// The member's latest snapshot.
    pub snapshots: Arc<snapshot::SnapshotStore>,
    /// What the data directory held at start (`None` without one).
    pub reopened: Option<log_store::Reopened>,
    /// Flushes the log to the disk every interval (`--fsync interval`).
    flush: Option<tokio::task::JoinHandle<()>>,
}

/// How long a member that does not lead may hear nothing from a leader (heartbeats come every
/// `heartbeat_ms`) before it asks whether the group still counts it.
pub const LEADER_SILENCE: Duration = Duration::from_secs(3);

/// The wait between two questions "does the group still count me?" while no leader speaks,
/// at first; it doubles after each that changes nothing, up to [`ASK_WAIT_MAX`], and starts
/// again once a leader is heard from.
const ASK_WAIT_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two such questions (a long loss of the majority, or a member cut
/// off: every member that hears no leader asks every member it knew, each question up to a
/// call budget).
const ASK_WAIT_MAX: Duration = Duration::from_secs(10);

/// When a leader last reached this member, and when the member may next ask whether the group
/// still counts it.
struct LeaderContact {
    heard: std::time::Instant,
    next_ask: std::time::Instant,
    ask_wait: Duration,
}

impl LeaderContact {
    fn new(now: std::time::Instant) -> LeaderContact {
        LeaderContact {
            heard: now,
            next_ask: now,
            ask_wait: ASK_WAIT_FIRST,
        }
    }

    fn heard(&mut self, now: std::time::Instant) {
        *self = LeaderContact::new(now);
    }

    fn may_ask(&self, now: std::time::Instant) -> bool {
        now >= self.next_ask
    }

    fn asked(&mut self, now: std::time::Instant) {
        self.next_ask = now + self.ask_wait;
        self.ask_wait = (self.ask_wait * 2).min(ASK_WAIT_MAX);
    }
}

/// A member of the cluster.
pub struct Cluster {
    /// The local node.
    pub node: Arc<Node>,
    /// The group's Raft instance on this member (replaced by [`Cluster::reset`]).
    instance: std::sync::RwLock<Arc<Instance>>,
    /// Counts the instances, twice per reset (odd while one runs): a watcher of the Raft
    /// metrics follows a reset to the new instance.
    generation: tokio::sync::watch::Sender<u64>,
    /// The options.
    pub options: ClusterOptions,
    /// The registered names of this group's processes.
    pub names: Names,
    /// The member's record service (the state machine applies to it through its process).
    pub records: Arc<crate::record::RecordService>,
    /// The leader's lease for reads without a quorum round.
    pub read_lease: read_lease::ReadLease,
    /// Whether the leader admits new members (false while a member adopting records has not
    /// captured them in a snapshot yet: a node admitted before would miss them).
    pub admitting: std::sync::atomic::AtomicBool,
    /// The members this one has seen unreachable, since when (kept by
    /// [`membership::keep_voters`]; a voter gone long enough gives its vote to a reachable
    /// member).
    pub unreachable: std::sync::Mutex<std::collections::BTreeMap<NodeId, std::time::Instant>>,
    /// Group 0 of this member, for a group `G` > 0: its members are the cluster's, among
    /// whom [`holders`] chooses who holds `G`.
    pub directory: Option<std::sync::Weak<Cluster>>,
    /// The group's leader as a member that holds no copy of the group last heard of it (from
    /// a `not_leader` answer): its router asks it first ([`holders::target`]).
    pub leader_hint: std::sync::Mutex<Option<NodeName>>,
    /// Set when this member leaves the cluster: it holds no group any more.
    pub leaving: std::sync::atomic::AtomicBool,
    /// Set when this member formed the cluster (initialized group 0): it forms the other
    /// groups too, holding each until [`holders`] hands it on.
    pub founded: std::sync::atomic::AtomicBool,
    /// How far this member has learned the expiry handlers subscribed before it joined.
    pub handlers_learned: expiry::HandlersLearned,
    /// When a leader last sent this member entries, a heartbeat or a part of a snapshot (or the
    /// instance started), and when it may next ask whether it still counts.
    leader_contact: std::sync::Mutex<LeaderContact>,
    /// The request ids the group's state machine applied last, kept across its instances on
    /// this member (a group formed again from its copy keeps them).
    pub remembered: Arc<parking_lot::Mutex<state_machine::Remembered>>,
}

impl Cluster {
    /// Starts the member on `node`: its Raft group, its endpoint and its router (registered
    /// under the group's [`Names`]: `ash_gen_server` for group 0; the record service must
    /// already run under the group's records name, [`state_machine::RECORDS_NAME`] for group
    /// 0). Then forms or joins the cluster in the background. A group `G` > 0 is given the
    /// member's group 0 (`directory`): [`holders`] places it on some of group 0's members.
    pub async fn start(
        node: &Arc<Node>,
        records: &Arc<crate::record::RecordService>,
        options: ClusterOptions,
        directory: Option<&Arc<Cluster>>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        // No record expires on its own while the log is applied again at start.
        let expiries = expiry::LeaderExpires::hold(records);
        let names = Names::of(options.group, options.shards > 1);
        let remembered = Arc::default();
        let instance = Instance::open(node, records, &options, &names, &remembered, false).await?;
        let cluster = Arc::new(Cluster {
            node: node.clone(),
            instance: std::sync::RwLock::new(Arc::new(instance)),
            generation: tokio::sync::watch::Sender::new(0),
            read_lease: read_lease::ReadLease::new(Duration::from_millis(options.heartbeat_ms * 2)),
            admitting: std::sync::atomic::AtomicBool::new(!options.adopt),
            unreachable: Default::default(),
            directory: directory.map(Arc::downgrade),
            leader_hint: Default::default(),
            leaving: Default::default(),
            founded: Default::default(),
            handlers_learned: Default::default(),
            leader_contact: std::sync::Mutex::new(LeaderContact::new(std::time::Instant::now())),
            options,
            names,
            records: records.clone(),
            remembered,
        });
        endpoint::register(&cluster)?;
        router::register(&cluster)?;
        expiries.install(&cluster, records);
        // Group 0's cluster gauges, and every other group's labelled with it.
        metrics::spawn(&cluster);
        record_pids::spawn(&cluster);
        tokio::spawn(membership::form(cluster.clone()));
        tokio::spawn(membership::keep_voters(cluster.clone()));
        Ok(cluster)
    }

    /// The group's Raft instance on this member now.
    pub fn instance(&self) -> Arc<Instance> {
        self.instance.read().expect("not poisoned").clone()
    }

    /// This member's Raft id in the group.
    pub fn id(&self) -> NodeId {
        self.instance().id
    }

    /// The group's Raft core on this member.
    pub fn raft(&self) -> Raft {
        self.instance().raft.clone()
    }

    /// A watch of the Raft server metrics, across resets ([`Cluster::changed`]).
    pub fn watch(&self) -> MetricsWatch {
        let generation = *self.generation.borrow();
        MetricsWatch {
            generation,
            metrics: self.raft().server_metrics(),
        }
    }

    /// Waits for the vote, role, leader or membership to change; after a reset, watches the
    /// new instance. False when the Raft core ended for good.
    pub async fn changed(&self, watch: &mut MetricsWatch) -> bool {
        if watch.metrics.changed().await.is_ok() {
            return true;
        }
        // Ended: a reset (the generation is odd while it runs, then even again with the new
        // instance), or the core stopped for good.
        let mut generations = self.generation.subscribe();
        if *generations.borrow() == watch.generation {
            return false;
        }
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            generations.wait_for(|g| *g % 2 == 0 && *g != watch.generation),
        )
        .await;
        if !matches!(waited, Ok(Ok(_))) {
            return false;
        }
        *watch = self.watch();
        true
    }

    /// Starts this group's Raft instance on this member again, empty and with a new id: the
    /// member no longer holds the group (its `leader` removed it, [`holders`]), and its records
    /// of the group go (their pids end with `{shutdown, {moved, Leader}}`). The old core
    /// stops; the endpoint and router serve the new one.
    pub async fn reset(&self, leader: &NodeName) -> Result<(), ClusterError> {
        // Record pids still here (this member led the group until it handed it on) end as a
        // moved record's do: `whereis` through any member gives the new pid.
        let moved = self
            .records
            .release_pids(&record_pids::moved_reason(leader));
        if moved > 0 {
            tracing::info!(%leader, pids = moved, "record pids moved with the group");
        }
        let old = self.retire().await;
        let reason = Value::pair(
            Value::Atom(*crate::term::atoms::SHUTDOWN),
            Value::Atom(Atom::from_static("group_handed_over")),
        );
        let dropped = self.records.stop_all(self.records.store.all(), &reason);
        let fresh = self.open_instance(true).await?;
        tracing::info!(
            group = self.options.group,
            old = old.id,
            new = fresh.id,
            records = dropped,
            "no longer holding the group: its records here dropped, a new instance waits"
        );
        self.install(fresh);
        Ok(())
    }

    /// Opens an instance of the group on this member (`fresh`: a new one that knows nothing of
    /// the group, its files in the data directory removed first), for [`Cluster::install`].
    async fn open_instance(&self, fresh: bool) -> Result<Instance, ClusterError> {
        Instance::open(
            &self.node,
            &self.records,
            &self.options,
            &self.names,
            &self.remembered,
            fresh,
        )
        .await
    }

    /// Stops the group's Raft core on this member for another instance to take its place
    /// ([`Cluster::install`]): watchers of its metrics wait for the new one (`changed`).
    async fn retire(&self) -> Arc<Instance> {
        let old = self.instance();
        self.generation.send_modify(|g| *g += 1);
        let _ = old.raft.shutdown().await;
        if let Some(flush) = &old.flush {
            flush.abort();
        }
        old.snapshots.detach();
        old
    }

    /// Puts `fresh` in the place of the instance [`Cluster::retire`] stopped.
    fn install(&self, fresh: Instance) {
        *self.instance.write().expect("not poisoned") = Arc::new(fresh);
        self.heard_from_leader();
        self.generation.send_modify(|g| *g += 1);
    }

    /// Whether this member's instance of the group has a log (a fresh one, never admitted,
    /// has nothing to drop).
    pub fn holds_something(&self) -> bool {
        self.raft().metrics().borrow().last_log_index.is_some()
    }

    /// Notes that a leader sent this member entries, a heartbeat or a part of a snapshot.
    pub fn heard_from_leader(&self) {
        let now = std::time::Instant::now();
        self.leader_contact.lock().expect("not poisoned").heard(now);
    }

    /// Whether this member may ask now whether the group still counts it: at once the first
    /// time, then after a wait that doubles with each question that changed nothing
    /// ([`Cluster::asked_if_counted`]), up to 10 s, until a leader is heard from again.
    pub fn may_ask_if_counted(&self) -> bool {
        let now = std::time::Instant::now();
        self.leader_contact
            .lock()
            .expect("not poisoned")
            .may_ask(now)
    }

    /// Notes a question whether the group still counts this member that changed nothing (it
    /// does, or nobody answered).
    pub fn asked_if_counted(&self) {
        let now = std::time::Instant::now();
        self.leader_contact.lock().expect("not poisoned").asked(now);
    }

    /// Whether no leader has sent this member anything for [`LEADER_SILENCE`] while it does not
    /// lead: a member removed while it was unreachable never hears from the leader again (a
    /// learner does not even stand for election), so it asks whether it still counts.
    pub fn leader_silent(&self) -> bool {
        !self.is_leader()
            && self
                .leader_contact
                .lock()
                .expect("not poisoned")
                .heard
                .elapsed()
                >= LEADER_SILENCE
    }

    /// This member as Raft knows it.
    pub fn member(&self) -> Member {
        Member {
            addr: self.node.config.name.to_string(),
        }
    }

    /// The current leader's node name, if there is one. Read from the server metrics, the
    /// channel [`Cluster::changed`] waits on: openraft updates them before the full metrics,
    /// so a waiter woken by a new leader that read the full ones could miss it, and wait for a
    /// change that never comes.
    pub fn leader(&self) -> Option<(NodeId, NodeName)> {
        let metrics = self.raft().server_metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let name = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .addr
            .parse()
            .ok()?;
        Some((leader, name))
    }

    /// Whether this member leads now.
    pub fn is_leader(&self) -> bool {
        // A leader that removed itself from the group (it handed the group on) no longer
        // leads it, whatever its core still says.
        let instance = self.instance();
        let metrics = instance.raft.server_metrics();
        let metrics = metrics.borrow();
        metrics.current_leader == Some(instance.id)
            && metrics
                .membership_config
                .membership()
                .get_node(&instance.id)
                .is_some()
    }

    /// Resolves when this member's Raft core has stopped on an error (openraft stops on a
    /// storage error: the log, or a snapshot, could not be written or installed), with the
    /// error: the member can no longer take part in the cluster.
    pub async fn stopped(&self) -> String {
        let mut watch = self.watch();
        loop {
            if let Some(why) = self.stop_reason() {
                return why;
            }
            if !self.changed(&mut watch).await {
                // The core reports why it stopped in the full metrics before it ends.
                return self
                    .stop_reason()
                    .unwrap_or_else(|| "the raft core ended".to_string());
            }
        }
    }

    /// Why this member's Raft core stopped, if it has (see [`Cluster::stopped`]), now. Not
    /// the old core a [`Cluster::reset`] stops.
    pub fn stop_reason(&self) -> Option<String> {
        let generation = *self.generation.borrow();
        if generation % 2 == 1 {
            return None;
        }
        let metrics = self.raft().metrics();
        let reason = metrics
            .borrow()
            .running_state
            .as_ref()
            .err()
            .map(|e| e.to_string());
        reason.filter(|_| *self.generation.borrow() == generation)
    }

    /// Waits up to `timeout` for a leader to be known.
    pub async fn await_leader(&self, timeout: Duration) -> Option<(NodeId, NodeName)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut watch = self.watch();
        loop {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            if !tokio::time::timeout_at(deadline, self.changed(&mut watch))
                .await
                .unwrap_or(false)
            {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_whether_the_group_counts_this_member_space_out_until_a_leader_speaks() {
        let start = std::time::Instant::now();
        let mut contact = LeaderContact::new(start);
        let s = |secs: u64| start + Duration::from_secs(secs);
        assert!(
            contact.may_ask(start),
            "the first question is asked at once"
        );
        // Each question that changes nothing doubles the wait: 1, 2, 4, 8, then 10 s.
        let mut at = start;
        for wait in [1, 2, 4, 8, 10, 10] {
            contact.asked(at);
            let next = at + Duration::from_secs(wait);
            assert!(
                !contact.may_ask(next - Duration::from_millis(1)),
                "before {wait} s"
            );
            assert!(contact.may_ask(next), "after {wait} s");
            at = next;
        }
        // A leader heard from: the next silence starts with a question at once, then 1 s.
        contact.heard(s(60));
        assert!(contact.may_ask(s(60)));
        contact.asked(s(63));
        assert!(!contact.may_ask(s(63)));
        assert!(contact.may_ask(s(64)));
    }

    #[test]
    fn group_0_keeps_the_names_of_a_member_of_one_group() {
        assert_eq!(
            Names::of(0, false),
            Names {
                endpoint: "ash_gen_server_raft".into(),
                records: "ash_gen_server_records".into(),
                router: "ash_gen_server".into(),
            }
        );
        let sharded = Names::of(0, true);
        assert_eq!(sharded.endpoint, "ash_gen_server_raft");
        assert_eq!(sharded.records, "ash_gen_server_records");
        assert_eq!(sharded.router, "ash_gen_server_group_0");
        let three = Names::of(3, true);
        assert_eq!(three, Names::of(3, false));
        assert_eq!(three.endpoint, "ash_gen_server_raft_3");
        assert_eq!(three.records, "ash_gen_server_records_3");
        assert_eq!(three.router, "ash_gen_server_group_3");
        let all: std::collections::BTreeSet<String> = (0..64)
            .flat_map(|g| {
                let n = Names::of(g, true);
                [n.endpoint, n.records, n.router]
            })
            .chain(std::iter::once(crate::protocol::SERVER_NAME.to_string()))
            .collect();
        assert_eq!(
            all.len(),
            64 * 3 + 1,
            "no two groups share a name, nor the front's"
        );
    }
}
