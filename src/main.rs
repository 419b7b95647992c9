//! The `ash-gen-server` command: start a node, call one, or run a standalone EPMD.

use ash_gen_server::client;
use ash_gen_server::cluster;
use ash_gen_server::node::{EpmdMode, Node, NodeConfig};
use ash_gen_server::protocol::{self, Server};
use ash_gen_server::storage::FsyncPolicy;
use ash_gen_server::term::parse_term;
use ash_gen_server::wire::Limits;
use ash_gen_server::wire::epmd::{DEFAULT_EPMD_PORT, EpmdServer};
use ash_gen_server::wire::tls::DistTls;
use clap::{Args, Parser, Subcommand};
use erl_dist::node::NodeName;
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// mimalloc: the node allocates and frees many small objects per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ash-gen-server",
    version,
    about = "A hidden Erlang node in Rust hosting one actor per record (the AshGenServer data layer engine)"
)]
struct Cli {
    /// Log lines as text (for people) or JSON (one object per line, for collectors).
    #[arg(long, global = true, value_enum, env = "ASH_GEN_SERVER_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node in the foreground.
    Start(Box<StartArgs>),
    /// Call a process on a running node once and print the reply, e.g.
    /// `ash-gen-server call --node rust@127.0.0.1 --cookie secret '{info, user}'`.
    Call(CallArgs),
    /// Print what a running node holds: resources and their records, peers, uptime, memory.
    Status(StatusArgs),
    /// Stop a running node as SIGTERM does (a cluster member first hands its place to the
    /// others), and wait until it has exited.
    Drain(DrainArgs),
    /// Form a cluster group that lost a majority of its voters for good again from the copy
    /// the member --node holds. A last resort: writes only the lost voters had are gone
    /// (docs/OPERATIONS.md, "Losing a majority"). The member refuses while the group may still
    /// come back by itself.
    Recover(RecoverArgs),
    /// Run only an EPMD server (for machines without `epmd`).
    Epmd {
        /// Port to listen on.
        #[arg(long, env = "ERL_EPMD_PORT", default_value_t = DEFAULT_EPMD_PORT)]
        port: u16,
    },
}

#[derive(Args)]
struct Naming {
    /// Long node name, `name@host` (as `erl -name`).
    #[arg(long, conflicts_with = "sname", env = "ASH_GEN_SERVER_NAME")]
    name: Option<String>,
    /// Short node name, `name` (as `erl -sname`); the host is this machine's short hostname.
    #[arg(long, env = "ASH_GEN_SERVER_SNAME")]
    sname: Option<String>,
    /// Magic cookie; defaults to the contents of ~/.erlang.cookie, as for `erl`.
    #[arg(long, env = "ASH_GEN_SERVER_COOKIE")]
    cookie: Option<String>,
    /// Port of EPMD.
    #[arg(long, env = "ERL_EPMD_PORT", default_value_t = DEFAULT_EPMD_PORT)]
    epmd_port: u16,
}

/// The distribution carrier, as `erl -proto_dist`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProtoDist {
    /// Plain TCP (OTP's default, inet_tcp_dist).
    #[value(name = "inet_tcp")]
    InetTcp,
    /// TLS (OTP's inet_tls_dist): needs --ssl-dist-optfile.
    #[value(name = "inet_tls")]
    InetTls,
}

#[derive(Args)]
struct DistArgs {
    /// Distribution carrier, as `erl -proto_dist`: inet_tcp (plain TCP) or inet_tls (TLS,
    /// compatible with OTP's inet_tls_dist; every node of the cluster must use it).
    #[arg(long, value_enum, default_value_t = ProtoDist::InetTcp, env = "ASH_GEN_SERVER_PROTO_DIST")]
    proto_dist: ProtoDist,
    /// The TLS options for inet_tls: the file `erl -ssl_dist_optfile FILE` takes
    /// ([{server, [...]}, {client, [...]}]).
    #[arg(long, value_name = "FILE", env = "ASH_GEN_SERVER_SSL_DIST_OPTFILE")]
    ssl_dist_optfile: Option<PathBuf>,
}

impl DistArgs {
    /// The TLS configuration, if TLS is asked for; `node` says whether the accepting side is
    /// needed too. Notes on the options go to the log.
    fn tls(&self, node: bool) -> Result<Option<DistTls>, String> {
        match (self.proto_dist, &self.ssl_dist_optfile) {
            (ProtoDist::InetTcp, None) => Ok(None),
            (ProtoDist::InetTcp, Some(_)) => {
                Err("--ssl-dist-optfile is for TLS distribution: add --proto-dist inet_tls".into())
            }
            (ProtoDist::InetTls, None) => Err(
                "--proto-dist inet_tls needs --ssl-dist-optfile FILE (the file erl takes with -ssl_dist_optfile)"
                    .into(),
            ),
            (ProtoDist::InetTls, Some(path)) => {
                let tls = if node {
                    DistTls::for_node(path)
                } else {
                    DistTls::for_caller(path)
                }
                .map_err(|e| format!("--ssl-dist-optfile {}: {e}", path.display()))?;
                for note in tls.notes() {
                    if note.warn {
                        tracing::warn!(side = %note.side, option = %note.option, "ssl_dist_optfile: {}", note.text);
                    } else {
                        tracing::info!(side = %note.side, option = %note.option, "ssl_dist_optfile: {}", note.text);
                    }
                }
                Ok(Some(tls))
            }
        }
    }

    fn name(&self) -> &'static str {
        match self.proto_dist {
            ProtoDist::InetTcp => "inet_tcp",
            ProtoDist::InetTls => "inet_tls",
        }
    }
}

#[derive(Args)]
struct StartArgs {
    /// Read settings from this TOML file (keys are the flags' long names; see docs/OPERATIONS.md).
    /// A flag beats its environment variable, which beats the file, which beats the default.
    #[arg(long, value_name = "FILE", env = "ASH_GEN_SERVER_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    naming: Naming,
    #[command(flatten)]
    dist: DistArgs,
    /// A node to join (repeatable; the variable takes a comma-separated list): when one of
    /// them is a cluster member, this node joins their cluster (as with --cluster); a single
    /// Rust node becomes a member with its records, and this node joins it; otherwise (BEAM
    /// nodes) it only connects to them at start.
    #[arg(
        long = "join",
        value_name = "NODE",
        env = "ASH_GEN_SERVER_JOIN",
        value_delimiter = ','
    )]
    join: Vec<String>,
    /// A node to connect to at start and nothing more (repeatable; the variable takes a
    /// comma-separated list): a Rust node named here stays a node of its own.
    #[arg(
        long = "connect",
        value_name = "NODE",
        env = "ASH_GEN_SERVER_CONNECT",
        value_delimiter = ','
    )]
    connect: Vec<String>,
    /// Run as a member of a cluster of Rust nodes (the records replicated by Raft on
    /// --replicas members; any member serves any request). Without --join it forms a new
    /// cluster; with --join it joins the cluster of those nodes. Implied by --replicas, by a
    /// --join peer that is a member, and by a --data-dir holding a member's Raft log.
    #[arg(long, env = "ASH_GEN_SERVER_CLUSTER")]
    cluster: bool,
    /// How many cluster members hold the records and vote (the effective number is
    /// min(R, members)); a write is acknowledged once a majority of them has it. The cluster's
    /// setting: a member joining without it takes the cluster's, one joining with another
    /// refuses to start. Default 3. Given, it makes this node a cluster member (forming a
    /// cluster without --join).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..), env = "ASH_GEN_SERVER_REPLICAS")]
    replicas: Option<u16>,
    /// With --cluster: build a snapshot of the records every this many log entries and drop
    /// the log before it (keeping a tenth of it for members a little behind), so the log stays
    /// bounded; a member that joins or falls further behind receives the snapshot.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..), env = "ASH_GEN_SERVER_SNAPSHOT_EVERY")]
    snapshot_every: u64,
    /// With --cluster: the leader removes a member that does not vote (a learner, or a voter
    /// whose vote went to a reachable member) once it has been unreachable this many seconds;
    /// if it comes back, it finds itself removed, drops its copy and joins again as a new
    /// member.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..), env = "ASH_GEN_SERVER_REMOVE_LOST_AFTER")]
    remove_lost_after: u64,
    /// Split the records into this many shards, each its own Raft group over the members (a
    /// record's shard is a hash of its resource and primary key; a resource with identities
    /// keeps its records in one shard). Every member of a cluster must be started with the
    /// same number. More than 1 makes this node a cluster member (as --cluster). Default 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256), env = "ASH_GEN_SERVER_SHARDS")]
    shards: u16,
    /// Distribution port (0 picks a free one).
    #[arg(long, default_value_t = 0, env = "ASH_GEN_SERVER_PORT")]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0", env = "ASH_GEN_SERVER_BIND")]
    bind: IpAddr,
    /// Use the running EPMD, start an embedded one when none runs (auto), or force either.
    #[arg(long, value_enum, default_value_t = EpmdMode::Auto, env = "ASH_GEN_SERVER_EPMD")]
    epmd: EpmdMode,
    /// Seconds of silence after which a peer is considered gone (as Erlang's net_ticktime).
    #[arg(long, default_value_t = 60, env = "ASH_GEN_SERVER_NET_TICKTIME")]
    net_ticktime: u64,
    /// Serve the `fault` request, which makes a record's actor fail, and the control
    /// process's `isolate`/`heal`, which cut the node off from others (for tests).
    #[arg(long, env = "ASH_GEN_SERVER_ENABLE_FAULT_INJECTION")]
    enable_fault_injection: bool,
    /// Microseconds a connection keeps polling for input before sleeping, like the BEAM's
    /// scheduler busy wait: cuts round trips roughly in half for a lone busy caller, at the
    /// cost of up to this much CPU per request. Adaptive: only while requests come one at a
    /// time, each soon after the last reply; never for batches (many callers) nor when idle
    /// (0 turns it off).
    #[arg(long, default_value_t = 100, env = "ASH_GEN_SERVER_BUSY_POLL_US")]
    busy_poll_us: u64,
    /// Define the resources listed in this JSON file at start (see src/config.rs).
    #[arg(long, value_name = "FILE", env = "ASH_GEN_SERVER_RESOURCES")]
    resources: Option<PathBuf>,
    /// Keep the records in this directory (a journal), so a restart, even after a crash, comes
    /// back with every acknowledged record and its remaining lifetime. Without it, records
    /// live in memory only. With --cluster: the member's Raft id, vote and log, so it restarts
    /// as the same member and rebuilds its records from the log.
    #[arg(long, value_name = "DIR", env = "ASH_GEN_SERVER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// When the journal is flushed to the disk: before each acknowledgement (always), every
    /// 100 ms (interval: a machine crash can lose the last 100 ms), or when the OS decides
    /// (never). A crash of the process alone loses nothing in any mode.
    #[arg(long, value_enum, default_value_t = FsyncPolicy::Interval, env = "ASH_GEN_SERVER_FSYNC")]
    fsync: FsyncPolicy,
    /// Seconds a SIGTERM/SIGINT may take in all: a cluster member leaves its cluster within
    /// three quarters of it; calls already received are answered and their replies written
    /// within the rest, before the connections close anyway.
    #[arg(long, default_value_t = 10, env = "ASH_GEN_SERVER_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: u64,
    /// Serve Prometheus metrics over HTTP on this address (e.g. 127.0.0.1:9568).
    #[arg(long, value_name = "ADDR", env = "ASH_GEN_SERVER_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// What a peer may make the node allocate (docs/PROTOCOL.md, "Limits").
#[derive(Args)]
struct LimitArgs {
    /// Largest distribution frame accepted, in bytes; a longer one closes the connection.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_FRAME_BYTES, env = "ASH_GEN_SERVER_MAX_FRAME_BYTES")]
    max_frame_bytes: usize,
    /// Deepest nesting of a term (at most 2000); a deeper call is answered with an error.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_TERM_DEPTH, env = "ASH_GEN_SERVER_MAX_TERM_DEPTH")]
    max_term_depth: usize,
    /// Most atoms one distribution header may list (at most 255); more closes the connection.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_ATOM_CACHE_ENTRIES, env = "ASH_GEN_SERVER_MAX_ATOM_CACHE_ENTRIES")]
    max_atom_cache_entries: usize,
    /// Most elements in one list or tuple, or pairs in one map; a longer one in a call is
    /// answered with an error.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_LIST_LENGTH, env = "ASH_GEN_SERVER_MAX_LIST_LENGTH")]
    max_list_length: usize,
    /// Largest integer, in bytes of magnitude; a larger one in a call is answered with an error.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_BIGNUM_BYTES, env = "ASH_GEN_SERVER_MAX_BIGNUM_BYTES")]
    max_bignum_bytes: usize,
    /// Most records one request (bulk_create) may carry; more is answered with an error.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_RECORDS_PER_REQUEST, env = "ASH_GEN_SERVER_MAX_RECORDS_PER_REQUEST")]
    max_records_per_request: usize,
}

impl LimitArgs {
    fn limits(&self) -> Result<Limits, String> {
        let limits = Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_term_depth: self.max_term_depth,
            max_atom_cache_entries: self.max_atom_cache_entries,
            max_list_length: self.max_list_length,
            max_bignum_bytes: self.max_bignum_bytes,
            max_records_per_request: self.max_records_per_request,
        };
        limits.validate()?;
        Ok(limits)
    }
}

/// How `call` and `status` reach a running node.
#[derive(Args)]
struct RemoteArgs {
    /// The node, `name@host`.
    #[arg(long)]
    node: String,
    /// Magic cookie; defaults to ~/.erlang.cookie.
    #[arg(long, env = "ASH_GEN_SERVER_COOKIE")]
    cookie: Option<String>,
    /// Port of EPMD.
    #[arg(long, env = "ERL_EPMD_PORT", default_value_t = DEFAULT_EPMD_PORT)]
    epmd_port: u16,
    #[command(flatten)]
    dist: DistArgs,
}

impl RemoteArgs {
    /// The node's name, the cookie (or ~/.erlang.cookie) and the TLS settings, checked.
    fn resolve(&self) -> Result<(NodeName, String, Option<DistTls>), String> {
        let node: NodeName = self
            .node
            .parse()
            .map_err(|e| format!("bad node name {:?}: {e}", self.node))?;
        let cookie = match &self.cookie {
            Some(c) => c.clone(),
            None => home_cookie()?,
        };
        Ok((node, cookie, self.dist.tls(false)?))
    }
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Seconds to wait for each reply.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DrainArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Seconds to wait for the node to leave and exit.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Args)]
struct RecoverArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The group to form again (0 holds every record with --shards 1, and the cluster's
    /// membership).
    #[arg(long, default_value_t = 0)]
    group: u32,
    /// With --data-dir: the lost members' directories are lost for good (they will never be
    /// started again with them). The member's old files are kept in DIR/recovered-<id>.
    #[arg(long)]
    lost_for_good: bool,
    /// Seconds to wait for the group to be formed again.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[derive(Args)]
struct CallArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Registered name to call.
    #[arg(long, default_value = "ash_gen_server")]
    to: String,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// The request, in Erlang syntax.
    request: String,
}

fn main() -> ExitCode {
    use clap::CommandFactory;
    let args = match ash_gen_server::settings::with_config_file(
        Cli::command(),
        "start",
        std::env::args_os().collect(),
    ) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    // A record actor that panics is restarted by its supervisor; say so in the log, not as a
    // bare message on stderr.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        tracing::error!(%location, "panic: {message}");
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 * 1024 * 1024)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Start(args) => start(*args).await,
            Command::Call(args) => call(args).await,
            Command::Status(args) => status(args).await,
            Command::Drain(args) => drain(args).await,
            Command::Recover(args) => recover(args).await,
            Command::Epmd { port } => epmd(port).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn home_cookie() -> Result<String, String> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set; pass --cookie")?;
    let path = PathBuf::from(home).join(".erlang.cookie");
    match std::fs::read_to_string(&path) {
        Ok(cookie) => Ok(cookie.trim().to_string()),
        Err(_) => Err(format!(
            "no --cookie given and {} cannot be read; pass --cookie or start `erl` once to create it",
            path.display()
        )),
    }
}

fn short_hostname() -> String {
    let full = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| {
            std::process::Command::new("hostname")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        })
        .unwrap_or_else(|| "localhost".into());
    full.trim()
        .split('.')
        .next()
        .unwrap_or("localhost")
        .to_string()
}

fn node_name(naming: &Naming) -> Result<NodeName, String> {
    let text = match (&naming.name, &naming.sname) {
        (Some(name), _) if name.contains('@') => name.clone(),
        (Some(name), _) => format!("{name}@127.0.0.1"),
        (None, Some(sname)) if sname.contains('@') => sname.clone(),
        (None, Some(sname)) => format!("{sname}@{}", short_hostname()),
        (None, None) => {
            return Err("give the node a name with --name name@host or --sname name".into());
        }
    };
    text.parse()
        .map_err(|e| format!("bad node name {text:?}: {e}"))
}

/// Whether this node runs as a cluster member: `--cluster` or `--replicas` says so, a data
/// directory holding a member's Raft log (a member restarted without the flag), or a `--join`
/// peer that is a member or deciding with `--join` peers of its own
/// ([`cluster::membership::runs_cluster`]); otherwise a single node, which connects to its
/// `--join` peers.
async fn cluster_member(args: &StartArgs, node: &std::sync::Arc<Node>, peers: &[NodeName]) -> bool {
    if let Some(dir) = &args.data_dir {
        match cluster::convert::recover_interrupted(dir) {
            Ok(true) => tracing::warn!(
                dir = %dir.display(),
                "this single node stopped while it became a cluster member: it starts as the single node it was, from its journal"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "could not remove the raft files of an interrupted change to a member")
            }
        }
    }
    if args.cluster || args.replicas.is_some() || args.shards > 1 {
        return true;
    }
    if let Some(dir) = &args.data_dir
        && dir.join(cluster::log_store::LOG_FILE).exists()
    {
        tracing::info!(dir = %dir.display(), "the data directory holds a cluster member's Raft log: starting as a member");
        return true;
    }
    if peers.is_empty() {
        return false;
    }
    let member =
        cluster::membership::runs_cluster(node, peers, cluster::membership::PROBE_WAIT).await;
    if member {
        tracing::info!(
            "a --join peer is a cluster member (or becomes one with this node): joining its cluster"
        );
    } else {
        tracing::info!("no --join peer is a cluster member: a single node, connected to them");
    }
    member
}

async fn start(args: StartArgs) -> Result<(), String> {
    let limits = args.limits.limits()?;
    let name = node_name(&args.naming)?;
    let cookie = match &args.naming.cookie {
        Some(c) => c.clone(),
        None => home_cookie()?,
    };
    let tls = args.dist.tls(true)?;
    let config = NodeConfig {
        name,
        cookie,
        port: args.port,
        bind: args.bind,
        epmd_port: args.naming.epmd_port,
        epmd_mode: args.epmd,
        net_ticktime: Duration::from_secs(args.net_ticktime.max(1)),
        busy_poll: Duration::from_micros(args.busy_poll_us),
        tls,
        limits,
    };
    let parse = |flag: &str, names: &[String]| -> Result<Vec<NodeName>, String> {
        names
            .iter()
            .map(|peer| {
                peer.parse()
                    .map_err(|e| format!("bad --{flag} node name {peer:?}: {e}"))
            })
            .collect()
    };
    let peers = parse("join", &args.join)?;
    let connect = parse("connect", &args.connect)?;
    // The node first, then the record service plugged into it as the `ash_gen_server` process.
    // The role process is registered before the node accepts connections: nodes started
    // beside this one ask it what it is.
    let mut role = None;
    let running = Node::start_with(config, |node| {
        role = cluster::role::Role::register(node, !peers.is_empty())
    })
    .await
    .map_err(|e| e.to_string())?;
    let role = role.ok_or_else(|| {
        format!(
            "the name {} is already registered",
            cluster::role::ROLE_NAME
        )
    })?;
    let clustered = cluster_member(&args, &running.node, &peers).await;
    let shards = u32::from(args.shards);
    if clustered && let Some(dir) = &args.data_dir {
        cluster::settings::check_data_dir(dir, shards)?;
    }
    // The cluster's replicas when this member joins one and was given none.
    let mut replicas = args.replicas;
    if clustered && !peers.is_empty() {
        let theirs = cluster::settings::agree(&running.node, &peers, shards, args.replicas).await?;
        replicas = replicas.or(theirs);
    }
    // One record service per group: group G's named by `cluster::Names::of(G, sharded)`.
    let names: Vec<cluster::Names> = (0..shards)
        .map(|g| cluster::Names::of(g, shards > 1))
        .collect();
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let mut servers = Vec::with_capacity(names.len());
    for names in &names {
        let options = protocol::Options {
            fault_injection: args.enable_fault_injection,
            data_dir: args.data_dir.clone().filter(|_| !clustered),
            fsync: Some(args.fsync),
            register_as: clustered.then(|| leak(&names.records)),
            pid_requests_to: clustered.then(|| leak(&names.router)),
        };
        servers.push(Server::start(&running.node, options).map_err(|e| e.to_string())?);
    }
    let server = &servers[0];
    let replicas = replicas.unwrap_or(cluster::settings::DEFAULT_REPLICAS);
    let cluster_options = cluster::ClusterOptions {
        join: peers.clone(),
        replicas: usize::from(replicas),
        data_dir: args.data_dir.clone(),
        fsync: args.fsync,
        snapshot_every: args.snapshot_every,
        remove_lost_after: Duration::from_secs(args.remove_lost_after),
        shards,
        ..Default::default()
    };
    // Every group (group 0's data in the data directory, group G's in DIR/group-G).
    let mut groups = Vec::new();
    if clustered {
        for (g, served) in servers.iter().enumerate() {
            let mut options = cluster_options.clone();
            options.group = g as u32;
            if g > 0 {
                options.data_dir = args.data_dir.as_ref().map(|d| d.join(format!("group-{g}")));
            }
            // A group G > 0 is placed on some of group 0's members (cluster::holders).
            let member = cluster::Cluster::start(
                &running.node,
                &served.service.records,
                options,
                groups.first(),
            )
            .await
            .map_err(|e| e.to_string())?;
            tracing::info!(
                id = member.id(),
                replicas,
                group = g,
                "cluster member started"
            );
            groups.push(member);
        }
        if shards > 1 {
            cluster::shards::register(&running.node, &groups).map_err(|e| e.to_string())?;
            tracing::info!(shards, "serving the records split into shards");
        }
    }
    let member = groups.first().cloned();
    // A single node becomes a member when a node joins it.
    let (member_set, members) = tokio::sync::watch::channel(member.clone());
    if member.is_none() {
        let (node, service) = (running.node.clone(), server.service.clone());
        role.joinable(Box::new(move || {
            Box::pin(async move {
                // The member is this node's as soon as it runs (SIGTERM makes it leave, its
                // Raft core stopping stops the node), before its records are in a snapshot.
                let started = |member: &std::sync::Arc<cluster::Cluster>| {
                    member_set.send_replace(Some(member.clone()));
                };
                match cluster::convert::convert(&node, &service, cluster_options, started).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "could not become a cluster member");
                        false
                    }
                }
            })
        }));
    }
    // Decided only now: a node asking this one to become a member finds it ready to.
    role.decided(clustered);
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let task =
                ash_gen_server::metrics::serve(addr, &server.service).map_err(|e| e.to_string())?;
            tracing::info!(%addr, "serving Prometheus metrics");
            Some(task)
        }
        None => None,
    };
    if let Some(path) = &args.resources {
        let json = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for served in &servers {
            let store = &served.service.records.store;
            let n = ash_gen_server::config::define_from_json(store, &json)?;
            tracing::info!(file = %path.display(), resources = n, "defined resources from file");
        }
    }
    for peer in peers.iter().filter(|_| member.is_none()).chain(&connect) {
        match running.node.connect(peer).await {
            Ok(()) => tracing::info!(%peer, "joined"),
            Err(e) => tracing::error!(%peer, error = %e, "could not join"),
        }
    }
    let shutdown = shutdown_signal();
    let faults = args.enable_fault_injection;
    let (_, drain) = ash_gen_server::control::register(&running.node, faults).ok_or_else(|| {
        format!(
            "the name {} is already registered",
            ash_gen_server::control::CONTROL_NAME
        )
    })?;
    println!(
        "ready node={} port={} epmd={} epmd_port={} proto_dist={}",
        running.node.config.name,
        running.port,
        if running.embedded_epmd {
            "embedded"
        } else {
            "external"
        },
        running.node.config.epmd_port,
        args.dist.name()
    );
    let _ = std::io::stdout().flush();

    // The member, once there is one (at start, or when this single node becomes one).
    let mut watch = members.clone();
    let every_group = groups.clone();
    let raft_stopped = async move {
        if every_group.len() > 1 {
            // Any group's Raft core stopping stops the node.
            let mut stopping = tokio::task::JoinSet::new();
            for (g, group) in every_group.into_iter().enumerate() {
                stopping.spawn(async move { format!("group {g}: {}", group.stopped().await) });
            }
            return match stopping.join_next().await {
                Some(Ok(why)) => why,
                _ => "the raft cores ended".into(),
            };
        }
        match watch.wait_for(Option::is_some).await {
            Ok(member) => {
                let member = member.clone().expect("waited for a member");
                member.stopped().await
            }
            Err(_) => std::future::pending().await,
        }
    };
    let (drained, fatal) = tokio::select! {
        _ = shutdown => (false, None),
        _ = drain.notified() => (true, None),
        why = raft_stopped => (false, Some(why)),
    };
    tracing::info!("shutting down");
    // One budget for the whole stop (--shutdown-timeout): leaving the cluster and handing the
    // record pids over take at most three quarters of it, answering the calls already
    // received what is left, so the node exits within it whatever the others do.
    let budget = Duration::from_secs(args.shutdown_timeout);
    let now = tokio::time::Instant::now();
    let (stop_by, leave_by) = (now + budget, now + budget * 3 / 4);
    let until = |t: tokio::time::Instant| t.saturating_duration_since(tokio::time::Instant::now());
    if let Some(why) = fatal {
        // A member whose Raft core stopped cannot serve nor leave: answer what was received,
        // then exit non-zero (restarted with its data directory it loads what it had).
        tracing::error!(error = %why, "the cluster member's raft core stopped");
        running.shutdown(until(stop_by)).await;
        for served in &servers {
            served.stop();
        }
        return Err(format!("the cluster member's raft core stopped: {why}"));
    }
    let member = members.borrow().clone();
    if let Some(member) = &member {
        if drained || member.instance().reopened.is_none() {
            // Every group at once (one with --shards 1).
            let every: Vec<_> = if groups.len() > 1 {
                groups.clone()
            } else {
                vec![member.clone()]
            };
            let leaving: Vec<_> = every
                .into_iter()
                .map(|member| {
                    tokio::spawn(async move {
                        if cluster::holders::placed(&member) {
                            // Handed on to the holders that take this member's place.
                            cluster::holders::leave(&member, leave_by).await;
                        } else {
                            cluster::membership::leave(&member, until(leave_by)).await;
                        }
                        // Its record pids (a leader's) move to the member that leads next.
                        cluster::record_pids::hand_over(
                            &member,
                            cluster::record_pids::HAND_OVER_WAIT.min(until(leave_by)),
                        )
                        .await;
                    })
                })
                .collect();
            for task in leaving {
                let _ = task.await;
            }
        } else {
            tracing::info!(
                "keeping this member's place in the cluster: it restarts with its data directory"
            );
        }
    }
    running.shutdown(until(stop_by)).await;
    for served in &servers {
        served.stop();
    }
    if let Some(task) = metrics {
        task.abort();
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so a signal sent right after the `ready` line is not missed.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn call(args: CallArgs) -> Result<(), String> {
    let (node, cookie, tls) = args.remote.resolve()?;
    let request = parse_term(&args.request).map_err(|e| format!("cannot read the request: {e}"))?;
    let reply = client::call(
        &node,
        &cookie,
        args.remote.epmd_port,
        tls.as_ref(),
        &args.to,
        &request,
        Duration::from_secs(args.timeout),
    )
    .await
    .map_err(|e| e.to_string())?;
    println!("{reply:?}");
    Ok(())
}

async fn drain(args: DrainArgs) -> Result<(), String> {
    let (node, cookie, tls) = args.remote.resolve()?;
    let timeout = Duration::from_secs(args.timeout);
    let reply = client::call(
        &node,
        &cookie,
        args.remote.epmd_port,
        tls.as_ref(),
        ash_gen_server::control::CONTROL_NAME,
        &parse_term("drain").expect("an atom"),
        timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    if reply != parse_term("ok").expect("an atom") {
        return Err(format!("{node} answered the drain with {reply:?}"));
    }
    // The node has left EPMD once it has exited.
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match ash_gen_server::wire::epmd::lookup(node.host(), args.remote.epmd_port, node.name())
            .await
        {
            Ok(None) | Err(_) => break,
            Ok(Some(_)) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{node} is still running after {timeout:?}"));
            }
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    println!("drained {node}");
    Ok(())
}

async fn recover(args: RecoverArgs) -> Result<(), String> {
    let (node, cookie, tls) = args.remote.resolve()?;
    let endpoint = cluster::Names::of(args.group, args.group > 0).endpoint;
    let reply = client::call(
        &node,
        &cookie,
        args.remote.epmd_port,
        tls.as_ref(),
        &endpoint,
        &parse_term(if args.lost_for_good {
            "{recover, lost_for_good}"
        } else {
            "recover"
        })
        .expect("a term"),
        Duration::from_secs(args.timeout),
    )
    .await
    .map_err(|e| {
        format!(
            "{e} (is {node} a cluster member with group {})?",
            args.group
        )
    })?;
    let field = |body: &ash_gen_server::term::Value, key: &'static str| {
        body.map_get_atom(ash_gen_server::term::Atom::from_static(key))
            .and_then(|v| v.as_int())
            .unwrap_or_default()
    };
    match reply.as_tuple() {
        Some([tag, body]) if tag.as_atom().map(|a| a.as_str()) == Some("ok") => {
            println!(
                "group {} formed again on {node} from its copy: {} records (snapshot at index {}), Raft id {} (was {}); members join it now",
                args.group,
                field(body, "records"),
                field(body, "snapshot"),
                field(body, "new_id"),
                field(body, "old_id"),
            );
            Ok(())
        }
        Some([tag, why]) if tag.as_atom().map(|a| a.as_str()) == Some("error") => {
            let why = why
                .as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_else(|| format!("{why:?}"));
            Err(format!(
                "{node} did not recover group {}: {why}",
                args.group
            ))
        }
        _ => Err(format!("{node} answered recover with {reply:?}")),
    }
}

async fn status(args: StatusArgs) -> Result<(), String> {
    let (node, cookie, tls) = args.remote.resolve()?;
    let status = ash_gen_server::status::Status::fetch(
        &node,
        &cookie,
        args.remote.epmd_port,
        tls.as_ref(),
        Duration::from_secs(args.timeout),
    )
    .await
    .map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", status.json());
    } else {
        print!("{}", status.human());
    }
    Ok(())
}

async fn epmd(port: u16) -> Result<(), String> {
    let server = EpmdServer::bind(port)
        .await
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    let shutdown = shutdown_signal();
    println!("ready epmd port={}", server.port());
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = server.run() => {}
        _ = shutdown => {}
    }
    Ok(())
}
