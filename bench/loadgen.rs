//! The capacity load generator: what one node can serve, and what each request costs it.
//!
//! A Rust program built on the crate's own distribution code: it starts one or more hidden
//! client nodes in this process ([`Node::new`], no listening socket), connects each to the
//! nodes under test, and drives them with N callers, each a [`Mailbox`] doing
//! `gen_server:call`s. Two kinds of target, measured back to back in one run:
//!
//! - **rust**: an `ash-gen-server` node, called as `{ash_gen_server, Node}` with
//!   `{get, R, #{id => Id}}` / `{update, R, #{id => Id}, #{score => N}}`;
//! - **beam**: the baseline BEAM node of `bench/` (`Bench.Baseline`, one `GenServer` per
//!   record), called on the record pids with `get` / `{update, #{score => N}}`. The records are
//!   loaded and the pids looked up through `rex` (`rpc:call`'s server), so nothing but the
//!   baseline's own code runs there.
//!
//! Both hold the same `--keys` records (`%{id, name, age, team, score}`). Rows:
//!
//! - **closed loop** (`--callers`, default 1,8,64,256): each caller sends its next request when
//!   the reply is in. ops/s, p50/p99/p99.9, and the target node's CPU per operation: the
//!   node's `utime + stime` from `/proc/<pid>/stat` over the run ÷ operations (the load
//!   generator's own CPU per operation beside it);
//! - **open loop** (`--rate-callers`, 64): requests are released at a fixed rate by a pacer
//!   (every 200 µs, as many as are due) and taken by at most that many callers; latency
//!   counts from the release, so a node that falls behind shows it. The rate is raised ×1.25
//!   per step (`--rate-step-s` each) until p99 exceeds `--p99-limit-us` (1 ms) or the node no
//!   longer keeps up; then bisected twice. The row is the highest rate that held. A second
//!   sweep, from that rate, drops the latency bound: the highest rate whose 1-second steps are
//!   all answered within 5 % more than a second (the side's sustainable throughput), a number
//!   that means something even when other tenants of the machine put p99 above 1 ms at any
//!   rate;
//! - **scaling** (`--clients`, 1,2,4): the same closed-loop get with `--scale-callers` callers
//!   spread over 1, 2, 4 client nodes (one distribution connection each).
//!
//! ```text
//! cargo build --release --example loadgen
//! target/release/examples/loadgen --cookie C --rust rust@127.0.0.1 --rust-pid P \
//!     --beam base@127.0.0.1 --beam-pid Q [--json out.json] [--smoke] [--help]
//! ```
//!
//! `bench/run.sh` runs it after the Elixir driver (workload 9) and puts its rows in the report.
//! Exits 1 if any call failed or got an unexpected reply; the numbers are reported, never
//! asserted.

use ash_gen_server::node::{Mailbox, Node, NodeConfig};
use ash_gen_server::term::{Atom, Pid, Value};
use erl_dist::node::NodeName;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);
const RESOURCE: &str = "bench_capacity";

const USAGE: &str = "\
loadgen --cookie C [--rust NODE --rust-pid PID] [--beam NODE --beam-pid PID] [options]
  --callers LIST        closed-loop caller counts (1,8,64,256)
  --ops N               operations per closed-loop row and side (30000)
  --rounds N            each closed-loop row in N rounds, the sides taking turns (3)
  --keys N              records on each side, picked at random (10000)
  --rate-callers N      callers of the open-loop rows (64)
  --rate-start N        first open-loop rate, ops/s (2000)
  --rate-step-s S       seconds per open-loop step (1.0)
  --p99-limit-us N      the open-loop latency bound (1000)
  --clients LIST        client nodes of the scaling rows (1,2,4)
  --scale-callers N     callers of the scaling rows, spread over the client nodes (64)
  --threads N           worker threads of this program (2)
  --ops-kinds LIST      get,update
  --no-rate --no-scale  skip the open-loop / scaling rows
  --rates LIST          instead of the sweeps, one open-loop step at each of these rates (ops/s)
                        per side and operation, one line each (to see where p99 moves)
  --json PATH           write the rows as JSON
  --smoke               tiny sizes (seconds): every row, numbers meaningless
";

#[derive(Clone)]
struct Opts {
    cookie: String,
    targets: Vec<(Kind, String, Option<u32>)>,
    callers: Vec<usize>,
    ops: usize,
    rounds: usize,
    keys: usize,
    rate_callers: usize,
    rate_start: f64,
    rate_step: Duration,
    p99_limit_us: f64,
    clients: Vec<usize>,
    scale_callers: usize,
    threads: usize,
    kinds: Vec<Op>,
    rate: bool,
    rates: Vec<usize>,
    scale: bool,
    json: Option<String>,
    smoke: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Rust,
    Beam,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rust => "rust",
            Kind::Beam => "beam",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Get,
    Update,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Update => "update",
        }
    }
}

fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse().map_err(|e| format!("{p}: {e}")))
        .collect()
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        cookie: String::new(),
        targets: Vec::new(),
        callers: vec![1, 8, 64, 256],
        ops: 30_000,
        rounds: 3,
        keys: 10_000,
        rate_callers: 64,
        rate_start: 2_000.0,
        rate_step: Duration::from_secs(1),
        p99_limit_us: 1_000.0,
        clients: vec![1, 2, 4],
        scale_callers: 64,
        threads: 2,
        kinds: vec![Op::Get, Op::Update],
        rate: true,
        rates: Vec::new(),
        scale: true,
        json: None,
        smoke: false,
    };
    let mut rust = (None, None);
    let mut beam = (None, None);
    let args: Vec<String> = std::env::args().skip(1).collect();
    // --smoke first, so explicit sizes given with it still win.
    if args.iter().any(|a| a == "--smoke") {
        o.smoke = true;
        o.callers = vec![1, 8, 64, 256];
        o.ops = 600;
        o.rounds = 1;
        o.keys = 200;
        o.rate_step = Duration::from_millis(100);
        o.rate_start = 500.0;
        o.clients = vec![1, 2, 4];
    }
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--cookie" => o.cookie = val()?,
            "--rust" => rust.0 = Some(val()?),
            "--rust-pid" => rust.1 = Some(num(val()?)? as u32),
            "--beam" => beam.0 = Some(val()?),
            "--beam-pid" => beam.1 = Some(num(val()?)? as u32),
            "--callers" => o.callers = parse_list(&val()?)?,
            "--ops" => o.ops = num(val()?)?.max(1),
            "--rounds" => o.rounds = num(val()?)?.max(1),
            "--keys" => o.keys = num(val()?)?.max(1),
            "--rate-callers" => o.rate_callers = num(val()?)?.max(1),
            "--rate-start" => o.rate_start = num(val()?)?.max(1) as f64,
            "--rate-step-s" => {
                let v = val()?;
                let s: f64 = v.parse().map_err(|e| format!("{v}: {e}"))?;
                o.rate_step = Duration::from_secs_f64(s.max(0.05));
            }
            "--p99-limit-us" => o.p99_limit_us = num(val()?)?.max(1) as f64,
            "--clients" => o.clients = parse_list(&val()?)?,
            "--scale-callers" => o.scale_callers = num(val()?)?.max(1),
            "--threads" => o.threads = num(val()?)?.max(1),
            "--ops-kinds" => {
                o.kinds = val()?
                    .split(',')
                    .map(|k| match k.trim() {
                        "get" => Ok(Op::Get),
                        "update" => Ok(Op::Update),
                        other => Err(format!("unknown operation {other}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--no-rate" => o.rate = false,
            "--rates" => o.rates = parse_list(&val()?)?,
            "--no-scale" => o.scale = false,
            "--json" => o.json = Some(val()?),
            "--smoke" => {}
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if let (Some(name), pid) = rust {
        o.targets.push((Kind::Rust, name, pid));
    }
    if let (Some(name), pid) = beam {
        o.targets.push((Kind::Beam, name, pid));
    }
    if o.targets.is_empty() {
        return Err("give --rust NODE and/or --beam NODE".into());
    }
    if o.cookie.is_empty() {
        return Err("--cookie is required".into());
    }
    if o.clients.is_empty() || o.clients.contains(&0) || o.callers.contains(&0) {
        return Err("--clients and --callers take positive numbers".into());
    }
    Ok(o)
}

fn main() {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(async move {
        match run(opts).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("loadgen: {e}");
                1
            }
        }
    });
    std::process::exit(code);
}

/// A node under test, set up: its name, OS pid and the keys (and, on the BEAM, record pids).
struct Target {
    kind: Kind,
    node: NodeName,
    os_pid: Option<u32>,
    /// How many records it holds (ids 1..=keys).
    keys: usize,
    /// The record pids, by key index (BEAM only).
    pids: Vec<Pid>,
}

/// One measurement.
#[derive(Clone, Default)]
struct Stats {
    ops: u64,
    wall_s: f64,
    ops_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    /// The target node's CPU per operation (µs), if its pid was given.
    node_cpu_us: Option<f64>,
    /// This program's CPU per operation (µs).
    gen_cpu_us: f64,
    errors: u64,
}

impl Stats {
    fn json(&self) -> String {
        format!(
            "{{\"ops\":{},\"wall_s\":{:.4},\"ops_s\":{:.1},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"node_cpu_us\":{},\"gen_cpu_us\":{:.2},\"errors\":{}}}",
            self.ops,
            self.wall_s,
            self.ops_s,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.node_cpu_us
                .map_or("null".to_string(), |c| format!("{c:.2}")),
            self.gen_cpu_us,
            self.errors
        )
    }
}

async fn run(opts: Opts) -> Result<(), String> {
    let max_clients = opts.clients.iter().copied().chain([1]).max().unwrap_or(1);
    let clients = start_clients(&opts, max_clients).await?;
    let mut targets = Vec::new();
    for (kind, name, os_pid) in &opts.targets {
        eprintln!("loadgen: setting up {} node {name}", kind.name());
        targets.push(Arc::new(
            set_up(&clients, *kind, name, *os_pid, opts.keys).await?,
        ));
    }
    let mut rows: Vec<String> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let mut errors = 0;

    // Closed loop: every caller count, the sides taking turns in rounds.
    for &op in &opts.kinds {
        for &callers in &opts.callers {
            let per_round = (opts.ops / opts.rounds).max(callers);
            let mut merged: Vec<(Kind, Vec<Sample>)> =
                targets.iter().map(|t| (t.kind, Vec::new())).collect();
            for round in 0..opts.rounds {
                for i in 0..targets.len() {
                    let t = &targets[(i + round) % targets.len()];
                    // Warm-up, then the measured run.
                    closed(&clients[..1], t, op, callers, per_round / 10 + callers).await;
                    let sample = closed(&clients[..1], t, op, callers, per_round).await;
                    merged
                        .iter_mut()
                        .find(|(k, _)| *k == t.kind)
                        .expect("every side")
                        .1
                        .push(sample);
                }
            }
            for (kind, samples) in merged {
                let stats = Sample::merge(samples);
                errors += stats.errors;
                lines.push(format!(
                    "closed {:6} {:4} callers {:4}: {}",
                    op.name(),
                    callers,
                    kind.name(),
                    human(&stats)
                ));
                rows.push(format!(
                    "{{\"section\":\"closed\",\"op\":\"{}\",\"callers\":{callers},\"clients\":1,\"side\":\"{}\",\"stats\":{}}}",
                    op.name(),
                    kind.name(),
                    stats.json()
                ));
                eprintln!("loadgen: {}", lines.last().expect("a line"));
            }
        }
    }

    // Open loop: the highest rate each side holds at p99 within the limit, then the highest
    // it keeps up with at all (its sustainable throughput, latency aside).
    if !opts.rates.is_empty() {
        for &op in &opts.kinds {
            for t in &targets {
                for &rate in &opts.rates {
                    let (sample, kept_up) = open(
                        &clients[..1],
                        t,
                        op,
                        opts.rate_callers,
                        rate as f64,
                        opts.rate_step,
                    )
                    .await;
                    let stats = Sample::merge(vec![sample]);
                    errors += stats.errors;
                    lines.push(format!(
                        "at     {:6} {:4} callers {:4}: {rate} ops/s offered, {} ({})",
                        op.name(),
                        opts.rate_callers,
                        t.kind.name(),
                        if kept_up { "kept up" } else { "fell behind" },
                        human(&stats)
                    ));
                    eprintln!("loadgen: {}", lines.last().expect("a line"));
                }
            }
        }
    } else if opts.rate {
        for &op in &opts.kinds {
            for t in &targets {
                let (rate, stats) =
                    sustained(&opts, &clients[..1], t, op, Bound::P99, opts.rate_start).await;
                errors += stats.errors;
                lines.push(format!(
                    "rate   {:6} {:4} callers {:4}: {:.0} ops/s sustained at p99 <= {} us ({})",
                    op.name(),
                    opts.rate_callers,
                    t.kind.name(),
                    rate,
                    opts.p99_limit_us,
                    human(&stats)
                ));
                rows.push(format!(
                    "{{\"section\":\"rate\",\"op\":\"{}\",\"callers\":{},\"clients\":1,\"side\":\"{}\",\"rate\":{rate:.1},\"p99_limit_us\":{},\"stats\":{}}}",
                    op.name(),
                    opts.rate_callers,
                    t.kind.name(),
                    opts.p99_limit_us,
                    stats.json()
                ));
                eprintln!("loadgen: {}", lines.last().expect("a line"));
                let start = rate.max(opts.rate_start);
                let (max, stats) =
                    sustained(&opts, &clients[..1], t, op, Bound::KeepUp, start).await;
                errors += stats.errors;
                lines.push(format!(
                    "max    {:6} {:4} callers {:4}: {:.0} ops/s kept up with (each {}-s step answered within {:.0} % more) ({})",
                    op.name(),
                    opts.rate_callers,
                    t.kind.name(),
                    max,
                    opts.rate_step.as_secs_f64(),
                    KEEP_UP_SLACK * 100.0,
                    human(&stats)
                ));
                rows.push(format!(
                    "{{\"section\":\"max_rate\",\"op\":\"{}\",\"callers\":{},\"clients\":1,\"side\":\"{}\",\"rate\":{max:.1},\"stats\":{}}}",
                    op.name(),
                    opts.rate_callers,
                    t.kind.name(),
                    stats.json()
                ));
                eprintln!("loadgen: {}", lines.last().expect("a line"));
            }
        }
    }

    // Scaling over client nodes (one distribution connection each).
    if opts.scale {
        for &n in &opts.clients {
            for t in &targets {
                let callers = opts.scale_callers.max(n);
                let per_round = (opts.ops / opts.rounds).max(callers);
                let mut samples = Vec::new();
                for _ in 0..opts.rounds {
                    closed(&clients[..n], t, Op::Get, callers, per_round / 10 + callers).await;
                    samples.push(closed(&clients[..n], t, Op::Get, callers, per_round).await);
                }
                let stats = Sample::merge(samples);
                errors += stats.errors;
                lines.push(format!(
                    "scale  get    {n} client nodes, {callers} callers {:4}: {}",
                    t.kind.name(),
                    human(&stats)
                ));
                rows.push(format!(
                    "{{\"section\":\"scale\",\"op\":\"get\",\"callers\":{callers},\"clients\":{n},\"side\":\"{}\",\"stats\":{}}}",
                    t.kind.name(),
                    stats.json()
                ));
                eprintln!("loadgen: {}", lines.last().expect("a line"));
            }
        }
    }

    for t in &targets {
        tear_down(&clients[0], t).await;
    }
    println!("{}", lines.join("\n"));
    if let Some(path) = &opts.json {
        let doc = format!(
            "{{\"keys\":{},\"threads\":{},\"smoke\":{},\"rows\":[\n{}\n]}}\n",
            opts.keys,
            opts.threads,
            opts.smoke,
            rows.join(",\n")
        );
        std::fs::write(path, doc).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    if errors > 0 {
        return Err(format!("{errors} calls failed or got unexpected replies"));
    }
    Ok(())
}

fn human(s: &Stats) -> String {
    format!(
        "{:>9.0} ops/s  p50 {:>7.1} us  p99 {:>7.1} us  p99.9 {:>7.1} us  node CPU {} us/op  loadgen CPU {:.1} us/op",
        s.ops_s,
        s.p50_us,
        s.p99_us,
        s.p999_us,
        s.node_cpu_us.map_or("?".to_string(), |c| format!("{c:.1}")),
        s.gen_cpu_us
    )
}

/// Starts `n` hidden client nodes in this process (no listening socket: they only dial).
async fn start_clients(opts: &Opts, n: usize) -> Result<Vec<Arc<Node>>, String> {
    let host = opts.targets[0]
        .1
        .split_once('@')
        .map_or("127.0.0.1".to_string(), |(_, h)| h.to_string());
    let mut nodes = Vec::new();
    for i in 0..n {
        let name = format!("loadgen_{}_{i}@{host}", std::process::id());
        let mut config = NodeConfig::new(
            name.parse().map_err(|e| format!("{name}: {e:?}"))?,
            opts.cookie.clone(),
        );
        // This program must not spin for replies: the CPU is the node's under test.
        config.busy_poll = Duration::ZERO;
        let creation = rand::random::<u32>().max(4);
        let node = Node::new(config, creation).map_err(|e| e.to_string())?;
        for (_, target, _) in &opts.targets {
            let peer = target.parse().map_err(|e| format!("{target}: {e:?}"))?;
            node.connect(&peer)
                .await
                .map_err(|e| format!("{name} cannot connect to {target}: {e}"))?;
        }
        nodes.push(node);
    }
    Ok(nodes)
}

fn atom(s: &str) -> Value {
    Value::Atom(Atom::new(s).expect("atom table"))
}

fn kv(k: &str, v: Value) -> (Value, Value) {
    (atom(k), v)
}

/// Record `i`, the same shape as `Bench.Data.person/1`.
fn person(i: usize) -> Value {
    Value::map(vec![
        kv("id", Value::Int(i as i64)),
        kv("name", Value::binary(format!("person-{i}").as_bytes())),
        kv("age", Value::Int((i * 37 % 100) as i64)),
        kv(
            "team",
            Value::binary(format!("team-{}", i * 13 % 60).as_bytes()),
        ),
        kv("score", Value::Int(0)),
    ])
}

/// `rpc:call(Node, M, F, A)` through the node's `rex` server.
async fn rpc(
    me: &Mailbox,
    node: &NodeName,
    m: &str,
    f: &str,
    a: Vec<Value>,
) -> Result<Value, String> {
    let request = Value::tuple(vec![
        atom("call"),
        atom(m),
        atom(f),
        Value::list(a),
        Value::Pid(Box::new(me.pid())),
    ]);
    me.call_remote(node, "rex", request, TIMEOUT)
        .await
        .map_err(|e| format!("rpc {m}:{f} on {node}: {e}"))
}

async fn ash_call(me: &Mailbox, node: &NodeName, request: Value) -> Result<Value, String> {
    me.call_remote(node, "ash_gen_server", request, TIMEOUT)
        .await
        .map_err(|e| format!("call to ash_gen_server on {node}: {e}"))
}

fn is_ok(reply: &Value) -> bool {
    match reply {
        Value::Atom(a) => a.as_str() == "ok",
        Value::Tuple(items) => matches!(&items[0], Value::Atom(a) if a.as_str() == "ok"),
        _ => false,
    }
}

/// Loads `keys` records on the target (a fresh resource) and, on the BEAM, looks up their pids.
async fn set_up(
    clients: &[Arc<Node>],
    kind: Kind,
    name: &str,
    os_pid: Option<u32>,
    keys: usize,
) -> Result<Target, String> {
    let node: NodeName = name.parse().map_err(|e| format!("{name}: {e:?}"))?;
    let me = Mailbox::new(&clients[0]);
    let resource = atom(RESOURCE);
    let batch = 1_000;
    let mut pids = Vec::new();
    match kind {
        Kind::Rust => {
            let _ = ash_call(
                &me,
                &node,
                Value::tuple(vec![atom("clear"), resource.clone()]),
            )
            .await;
            let reply = ash_call(
                &me,
                &node,
                Value::tuple(vec![
                    atom("define"),
                    resource.clone(),
                    Value::map(vec![kv("primary_key", Value::list(vec![atom("id")]))]),
                ]),
            )
            .await?;
            if !is_ok(&reply) {
                return Err(format!("define on {name}: {reply:?}"));
            }
            for first in (1..=keys).step_by(batch) {
                let records = (first..=(first + batch - 1).min(keys))
                    .map(person)
                    .collect();
                let reply = ash_call(
                    &me,
                    &node,
                    Value::tuple(vec![
                        atom("bulk_create"),
                        resource.clone(),
                        Value::list(records),
                        Value::map(vec![]),
                    ]),
                )
                .await?;
                if !is_ok(&reply) {
                    return Err(format!("bulk_create on {name}: {reply:?}"));
                }
            }
        }
        Kind::Beam => {
            let base = "Elixir.Bench.Baseline";
            rpc(&me, &node, base, "clear", vec![resource.clone()]).await?;
            for first in (1..=keys).step_by(batch) {
                let last = (first + batch - 1).min(keys);
                let records = (first..=last).map(person).collect();
                let loaded = rpc(
                    &me,
                    &node,
                    base,
                    "load",
                    vec![resource.clone(), Value::list(records)],
                )
                .await?;
                if loaded != Value::Int((last - first + 1) as i64) {
                    return Err(format!("baseline load on {name}: {loaded:?}"));
                }
            }
            let ids = (1..=keys).map(|i| Value::Int(i as i64)).collect();
            let reply = rpc(
                &me,
                &node,
                base,
                "pids",
                vec![resource.clone(), Value::list(ids)],
            )
            .await?;
            for pid in reply.as_list().unwrap_or(&[]) {
                match pid {
                    Value::Pid(p) => pids.push(**p),
                    other => return Err(format!("baseline pids on {name}: {other:?}")),
                }
            }
            if pids.len() != keys {
                return Err(format!("baseline pids on {name}: {} of {keys}", pids.len()));
            }
        }
    }
    Ok(Target {
        kind,
        node,
        os_pid,
        keys,
        pids,
    })
}

async fn tear_down(client: &Arc<Node>, t: &Target) {
    let me = Mailbox::new(client);
    let resource = atom(RESOURCE);
    let _ = match t.kind {
        Kind::Rust => ash_call(&me, &t.node, Value::tuple(vec![atom("clear"), resource])).await,
        Kind::Beam => {
            rpc(
                &me,
                &t.node,
                "Elixir.Bench.Baseline",
                "clear",
                vec![resource],
            )
            .await
        }
    };
}

/// A small fast generator for key picks (xorshift64*), one per caller.
struct Pick(u64);

impl Pick {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// One call of `op` on record `key` (0-based) of the target. Returns whether the reply was
/// `{ok, _}`.
async fn one_call(me: &Mailbox, t: &Target, op: Op, key: usize, n: u64) -> bool {
    static NAMES: std::sync::OnceLock<[Atom; 5]> = std::sync::OnceLock::new();
    let [get, update, id, score, resource] = *NAMES
        .get_or_init(|| ["get", "update", "id", "score", RESOURCE].map(|s| Atom::new(s).unwrap()));
    let reply = match t.kind {
        Kind::Rust => {
            let pk = Value::map(vec![(Value::Atom(id), Value::Int(key as i64 + 1))]);
            let request = match op {
                Op::Get => Value::tuple(vec![Value::Atom(get), Value::Atom(resource), pk]),
                Op::Update => Value::tuple(vec![
                    Value::Atom(update),
                    Value::Atom(resource),
                    pk,
                    Value::map(vec![(Value::Atom(score), Value::Int(n as i64))]),
                ]),
            };
            me.call_remote(&t.node, "ash_gen_server", request, TIMEOUT)
                .await
        }
        Kind::Beam => {
            let request = match op {
                Op::Get => Value::Atom(get),
                Op::Update => Value::pair(
                    Value::Atom(update),
                    Value::map(vec![(Value::Atom(score), Value::Int(n as i64))]),
                ),
            };
            me.call_pid(&t.pids[key], request, TIMEOUT).await
        }
    };
    matches!(reply, Ok(ref r) if is_ok(r))
}

/// The raw result of one run: latencies (ns), wall time, CPU used.
struct Sample {
    lat_ns: Vec<u64>,
    wall: Duration,
    node_cpu: Option<Duration>,
    gen_cpu: Duration,
    errors: u64,
}

impl Sample {
    /// Pools runs: ops/s is the median run's, percentiles over every operation, CPU per
    /// operation over all of them.
    fn merge(mut samples: Vec<Sample>) -> Stats {
        let mut rates: Vec<f64> = samples
            .iter()
            .map(|s| s.lat_ns.len() as f64 / s.wall.as_secs_f64().max(1e-9))
            .collect();
        rates.sort_by(f64::total_cmp);
        let ops: u64 = samples.iter().map(|s| s.lat_ns.len() as u64).sum();
        let wall: f64 = samples.iter().map(|s| s.wall.as_secs_f64()).sum();
        let node_cpu = samples
            .iter()
            .map(|s| s.node_cpu)
            .try_fold(Duration::ZERO, |acc, c| c.map(|c| acc + c));
        let gen_cpu: Duration = samples.iter().map(|s| s.gen_cpu).sum();
        let errors = samples.iter().map(|s| s.errors).sum();
        let mut lat: Vec<u64> = samples
            .iter_mut()
            .flat_map(|s| s.lat_ns.drain(..))
            .collect();
        lat.sort_unstable();
        let pct = |p: f64| {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0
            }
        };
        let per_op = |d: Duration| d.as_secs_f64() * 1e6 / ops.max(1) as f64;
        Stats {
            ops,
            wall_s: wall,
            ops_s: rates.get(rates.len() / 2).copied().unwrap_or(0.0),
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            p999_us: pct(0.999),
            node_cpu_us: node_cpu.map(per_op),
            gen_cpu_us: per_op(gen_cpu),
            errors,
        }
    }
}

/// CPU time (user + system) of a process so far, from `/proc/<pid>/stat` (Linux; clock ticks
/// of 1/100 s, the `USER_HZ` of every Linux the project runs on).
fn cpu_of(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// A closed-loop run: `callers` callers spread over `clients`, `ops` calls in all.
async fn closed(
    clients: &[Arc<Node>],
    t: &Arc<Target>,
    op: Op,
    callers: usize,
    ops: usize,
) -> Sample {
    let keys = t.keys;
    let node_before = t.os_pid.and_then(|p| cpu_of(Some(p)));
    let gen_before = cpu_of(None).unwrap_or_default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let me = Mailbox::new(&clients[c % clients.len()]);
        let n = ops / callers + usize::from(c < ops % callers);
        let target = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut pick = Pick(0x9e37_79b9_7f4a_7c15 ^ ((c as u64 + 1) * 0x1000_0000_01b3));
            let mut lat = Vec::with_capacity(n);
            let mut errors = 0;
            for i in 0..n {
                let key = pick.next(keys);
                let t0 = Instant::now();
                if !one_call(&me, &target, op, key, i as u64).await {
                    errors += 1;
                }
                lat.push(t0.elapsed().as_nanos() as u64);
            }
            (lat, errors)
        }));
    }
    let mut lat_ns = Vec::with_capacity(ops);
    let mut errors = 0;
    for task in tasks {
        let (lat, e) = task.await.expect("a caller panicked");
        lat_ns.extend(lat);
        errors += e;
    }
    let wall = started.elapsed();
    let node_cpu = match (node_before, t.os_pid.and_then(|p| cpu_of(Some(p)))) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Sample {
        lat_ns,
        wall,
        node_cpu,
        gen_cpu: cpu_of(None).unwrap_or_default().saturating_sub(gen_before),
        errors,
    }
}

/// An open-loop run at `rate` ops/s for `length`: a pacer releases the requests due every
/// [`PACE`] into a queue that at most `callers` callers take from; each latency counts from
/// the request's release. Returns the sample and whether every request was answered within
/// the run plus the latency bound (the node kept up).
///
/// The queue is a semaphore counting the released requests beside a plain queue of their
/// release times: every idle caller waits on the semaphore, and a release wakes as many of
/// them as requests came, at once. (A queue behind an async lock let one caller wait at a
/// time: a burst of requests reached the callers one hand-off after another, and that
/// chain, not the node, set the p99 at high rates.)
async fn open(
    clients: &[Arc<Node>],
    t: &Arc<Target>,
    op: Op,
    callers: usize,
    rate: f64,
    length: Duration,
) -> (Sample, bool) {
    let keys = t.keys;
    let released = Arc::new(Released::new());
    let node_before = t.os_pid.and_then(|p| cpu_of(Some(p)));
    let gen_before = cpu_of(None).unwrap_or_default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let me = Mailbox::new(&clients[c % clients.len()]);
        let released = released.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut pick = Pick(0x2545_f491_4f6c_dd1d ^ ((c as u64 + 7) * 0x1000_0000_01b3));
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut i = 0u64;
            while let Some(at) = released.take().await {
                i += 1;
                if !one_call(&me, &t, op, pick.next(keys), i).await {
                    errors += 1;
                }
                lat.push(at.elapsed().as_nanos() as u64);
            }
            (lat, errors)
        }));
    }
    let total = (rate * length.as_secs_f64()).round() as u64;
    let pacer = {
        let released = released.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while sent < total {
                std::thread::sleep(PACE);
                let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
                if due > sent {
                    released.release(Instant::now(), (due - sent) as usize);
                    sent = due;
                }
            }
            released.finish(callers);
        })
    };
    let mut lat_ns = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (lat, e) = task.await.expect("a caller panicked");
        lat_ns.extend(lat);
        errors += e;
    }
    pacer.join().expect("the pacer panicked");
    let wall = started.elapsed();
    let node_cpu = match (node_before, t.os_pid.and_then(|p| cpu_of(Some(p)))) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    // Kept up: the last reply came within the run's length plus a few milliseconds.
    let kept_up = wall <= length + Duration::from_millis(20);
    let sample = Sample {
        lat_ns,
        wall,
        node_cpu,
        gen_cpu: cpu_of(None).unwrap_or_default().saturating_sub(gen_before),
        errors,
    };
    (sample, kept_up)
}

/// How often the open loop's pacer releases the requests due: a thread of its own sleeping
/// this long (a tokio timer ticks at best every millisecond). Requests come spread over time,
/// as they would from many clients, not a millisecond's worth at once: with 64 callers, a
/// millisecond's worth at 120,000 ops/s is two rounds of calls, and that clumping, not the
/// node, set the p99.
const PACE: Duration = Duration::from_micros(200);

/// The open loop's queue of released requests (their release times), and a semaphore that
/// counts them for the callers waiting on it.
struct Released {
    times: parking_lot::Mutex<std::collections::VecDeque<Instant>>,
    ready: tokio::sync::Semaphore,
}

impl Released {
    fn new() -> Released {
        Released {
            times: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            ready: tokio::sync::Semaphore::new(0),
        }
    }

    /// Releases `n` requests at `at`, waking up to `n` waiting callers.
    fn release(&self, at: Instant, n: usize) {
        self.times.lock().extend(std::iter::repeat_n(at, n));
        self.ready.add_permits(n);
    }

    /// After the last release: each of the `callers`, once the queue is empty, gets `None`.
    fn finish(&self, callers: usize) {
        self.ready.add_permits(callers);
    }

    /// The next request's release time, waiting for one; `None` once the run is over.
    async fn take(&self) -> Option<Instant> {
        self.ready.acquire().await.ok()?.forget();
        self.times.lock().pop_front()
    }
}

/// What an open-loop step must show for its rate to count as sustained.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bound {
    /// p99 within `--p99-limit-us`, and every request answered within 20 ms of the step's end.
    P99,
    /// Throughput only: the requests of the step all answered within [`KEEP_UP_SLACK`] more
    /// than the step's length (completions at least ~95 % of the offered rate), whatever the
    /// latency. This is the highest rate a side keeps up with (its sustainable throughput); on
    /// a shared machine, where other tenants' time slices put p99 above 1 ms at any rate, it
    /// still tells the sides apart.
    KeepUp,
}

/// How much longer than its length an open-loop step may take and still count as kept up.
const KEEP_UP_SLACK: f64 = 0.05;

/// The highest open-loop rate the target sustains under `bound`, from `start`: ×1.25 steps
/// until a step fails twice in a row, then two bisections. Returns the rate and its run.
async fn sustained(
    opts: &Opts,
    clients: &[Arc<Node>],
    t: &Arc<Target>,
    op: Op,
    bound: Bound,
    start: f64,
) -> (f64, Stats) {
    let callers = opts.rate_callers;
    let try_rate = |rate: f64| {
        let t = t.clone();
        async move {
            let (sample, kept_up) = open(clients, &t, op, callers, rate, opts.rate_step).await;
            let slow =
                sample.wall.as_secs_f64() > opts.rate_step.as_secs_f64() * (1.0 + KEEP_UP_SLACK);
            let stats = Sample::merge(vec![sample]);
            let ok = stats.errors == 0
                && match bound {
                    Bound::P99 => kept_up && stats.p99_us <= opts.p99_limit_us,
                    Bound::KeepUp => !slow,
                };
            (ok, stats)
        }
    };
    // Warm-up.
    let _ = try_rate(start).await;
    let mut good: Option<(f64, Stats)> = None;
    let mut last = Stats::default();
    let mut rate = start;
    let mut bad = None;
    let max_steps = if opts.smoke { 2 } else { 40 };
    for _ in 0..max_steps {
        let (mut ok, mut stats) = try_rate(rate).await;
        if !ok {
            // One retry: a shared machine has hiccups.
            (ok, stats) = try_rate(rate).await;
        }
        if ok {
            good = Some((rate, stats));
            rate *= 1.25;
        } else {
            last = stats;
            bad = Some(rate);
            break;
        }
    }
    // Not even the first rate held: try lower ones.
    let mut low = start;
    for _ in 0..if opts.smoke { 1 } else { 4 } {
        if good.is_some() {
            break;
        }
        low /= 2.0;
        let (ok, stats) = try_rate(low).await;
        if ok {
            good = Some((low, stats));
        } else {
            last = stats;
            bad = Some(low * 2.0);
        }
    }
    if let (Some(mut hi), Some(_)) = (bad, &good) {
        for _ in 0..if opts.smoke { 0 } else { 2 } {
            let lo = good.as_ref().map_or(0.0, |g| g.0);
            let mid = (lo + hi) / 2.0;
            let (ok, stats) = try_rate(mid).await;
            if ok {
                good = Some((mid, stats));
            } else {
                hi = mid;
            }
        }
    }
    // None held: rate 0, with the numbers of the lowest rate tried.
    good.unwrap_or((0.0, last))
}
