//! A bounded fuzz run against the real node binary over real sockets.
//!
//! Structure-aware cases, each one frame (or one handshake):
//!
//! - handshakes: a valid first message (`N`, flags, creation, name) or challenge reply (`r`)
//!   mutated byte by byte, or random bytes instead of a handshake;
//! - requests: valid frames carrying random terms — `gen_server` calls of every request with
//!   random arguments, messages and link/monitor/exit signals to random pids of the node;
//! - control messages and payloads: a valid frame's bytes mutated (bit flips, interesting
//!   bytes, insertions, deletions, truncation, lying lengths), with and without the atom cache;
//! - distribution headers: the atom cache header of a valid frame mutated;
//! - limits: frames nesting too deep, lists, maps and bignums over the limits, huge lengths;
//! - raw bytes as frames.
//!
//! A connection gets a few request cases interleaved with over-limit frames (calls nesting too
//! deep or holding a bignum over the limit, answered `bad_request`; the same as plain messages,
//! dropped), and then, often, one case that may break it. A connection that got no case that
//! may break it must still answer a final `ping`; any other must
//! either answer it or be closed by the node within a bounded time (never hang). Meanwhile a
//! probe connection, made before the run and kept open, checks the node serves and that its
//! records are untouched. Afterwards: the node process lives, the probe's records are exactly as
//! created, `stats` shows only the probe's connection and no leaked monitors, links, processes
//! or pending replies, the log has no panic and at most one disconnect line per connection,
//! and SIGTERM stops the node with exit status 0.
//!
//! Cases are counted as valid requests and hostile ones (mutated, over the limits, breaking,
//! handshake, raw), printed apart; over half are hostile.
//!
//! `ASH_FUZZ_CASES` sets the number of cases (default 100,000), `ASH_FUZZ_SEED` the seed
//! (printed, so a failure can be replayed); `scripts/fuzz.sh --cases N` runs it in release.

mod common;

use ash_gen_server::term::{Atom, Pid, Ref, Value, parse_term};
use ash_gen_server::wire::dist::FrameWriter;
use common::{COOKIE, NodeProc, Peer};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEFAULT_CASES: usize = 100_000;
/// Of a connection's cases before the one that may break it, the share that are over-limit
/// frames the node must answer (or drop) and keep the connection for.
const HOSTILE_KEPT_SHARE: f64 = 0.6;
/// Concurrent fuzzing connections.
const WORKERS: usize = 6;
/// How long a broken connection may take to be closed, or a reply to come.
const WAIT: Duration = Duration::from_secs(15);

fn t(s: &str) -> Value {
    parse_term(s).unwrap()
}

fn atom(s: &str) -> Value {
    Value::Atom(Atom::new(s).unwrap())
}

#[derive(Default)]
struct Counts {
    cases: AtomicUsize,
    /// Cases that are not valid requests: mutated, breaking, handshake, raw.
    hostile: AtomicUsize,
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    closed_by_node: AtomicUsize,
    kept: AtomicUsize,
    by_kind: parking_lot::Mutex<HashMap<&'static str, usize>>,
}

impl Counts {
    fn case(&self, kind: &'static str) {
        self.cases.fetch_add(1, Ordering::Relaxed);
        if kind != "request" {
            self.hostile.fetch_add(1, Ordering::Relaxed);
        }
        *self.by_kind.lock().entry(kind).or_default() += 1;
    }
}

#[test]
fn network_fuzz() {
    let total: usize = std::env::var("ASH_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed: u64 = std::env::var("ASH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("network fuzz: {total} cases, seed {seed} (ASH_FUZZ_SEED={seed} to replay)");
    // Connection events at info (to count disconnect reasons), everything else at warn.
    let mut node = NodeProc::start(
        "fuzz",
        &["--net-ticktime", "60"],
        "warn,ash_gen_server::node::connection=info",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let counts = Arc::new(Counts::default());
    let port = node.port;
    let node_name = node.name.clone();
    let (baseline, after) = rt.block_on(async {
        // The probe: made before the run, kept open through it.
        let mut probe = Peer::connect(port, &format!("probe_{}@127.0.0.1", std::process::id()), true)
            .await
            .expect("probe connects");
        let d = Duration::from_secs(10);
        assert_eq!(
            probe.call(&t("{define, probe_res, #{primary_key => [id], identities => [{by_email, [email]}]}}"), d).await.unwrap(),
            t("ok")
        );
        let mut expected = Vec::new();
        for i in 0..50 {
            let rec = t(&format!("#{{id => {i}, email => <<\"p{i}\">>, n => {}}}", i * 7));
            let reply = probe.call(&Value::tuple(vec![atom("create"), atom("probe_res"), rec.clone()]), d).await.unwrap();
            assert_eq!(reply, Value::pair(atom("ok"), rec.clone()));
            expected.push(rec);
        }
        let baseline = stats(&mut probe).await;
        println!("stats before: {baseline:?}");

        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let counts = counts.clone();
            let node_name = node_name.clone();
            workers.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64 * 0x9E37_79B9));
                let mut conn_no = 0usize;
                let node_atom = Atom::new(&node_name).unwrap();
                while counts.cases.load(Ordering::Relaxed) < total {
                    conn_no += 1;
                    let name = format!("fz{w}x{conn_no}_{}@127.0.0.1", std::process::id());
                    if let Err(e) = one_connection(&mut rng, port, &name, node_atom, &counts).await {
                        panic!("worker {w}, connection {name}: {e}");
                    }
                }
            }));
        }
        // The probe keeps serving while the fuzz runs.
        let mut last_print = Instant::now();
        loop {
            if workers.iter().all(|w| w.is_finished()) {
                break;
            }
            let reply = probe.call(&atom("ping"), d).await;
            assert_eq!(reply, Ok(atom("pong")), "the probe's connection must be untouched");
            if last_print.elapsed() > Duration::from_secs(10) {
                last_print = Instant::now();
                println!(
                    "  {} cases ({} hostile), {} connections, {:.0} s",
                    counts.cases.load(Ordering::Relaxed),
                    counts.hostile.load(Ordering::Relaxed),
                    counts.connections.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for w in workers {
            w.await.expect("a fuzz worker failed");
        }
        // The fuzz resources' records go (and their pids with them).
        let resources = probe.call(&atom("resources"), d).await.unwrap();
        for r in resources.as_tuple().unwrap()[1].as_list().unwrap().iter() {
            if *r != atom("probe_res") {
                let _ = probe.call(&Value::pair(atom("clear"), r.clone()), d).await.unwrap();
            }
        }
        // Every fuzz connection is gone: only the probe's is left, with nothing leaked.
        let mut after = stats(&mut probe).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(&after, "connections") != 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            after = stats(&mut probe).await;
        }
        let reply = probe
            .call(&t("{query, probe_res, #{sort => [{id, asc}]}}"), d)
            .await
            .unwrap();
        assert_eq!(reply, Value::pair(atom("ok"), Value::list(expected)), "probe records intact");
        (baseline, after)
    });
    let elapsed = started.elapsed();
    let cases = counts.cases.load(Ordering::Relaxed);
    let hostile = counts.hostile.load(Ordering::Relaxed);
    println!(
        "network fuzz: {cases} cases ({} valid requests, {hostile} hostile: mutated, over the limits, breaking, handshake, raw) over {} connections ({} handshakes completed; {} closed by the node, {} kept) in {:.1} s ({:.0} cases/s)",
        cases - hostile,
        counts.connections.load(Ordering::Relaxed),
        counts.handshakes.load(Ordering::Relaxed),
        counts.closed_by_node.load(Ordering::Relaxed),
        counts.kept.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        cases as f64 / elapsed.as_secs_f64()
    );
    let mut kinds: Vec<_> = counts
        .by_kind
        .lock()
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    kinds.sort();
    println!("  by kind: {kinds:?}");
    println!("stats after: {after:?}");
    assert!(cases >= total);
    assert!(
        cases < 1000 || hostile * 2 >= cases,
        "hostile cases are under half: {hostile} of {cases}"
    );
    assert!(node.alive(), "the node died");
    assert_eq!(get(&after, "connections"), 1, "only the probe is connected");
    for key in [
        "processes",
        "monitors",
        "remote_monitors",
        "links",
        "pending_replies",
        "expiry_handlers",
    ] {
        assert_eq!(
            get(&after, key),
            get(&baseline, key),
            "{key} back to where it was"
        );
    }
    let rss = get(&after, "rss_bytes");
    println!("  rss after: {} MiB", rss / (1024 * 1024));
    assert!(rss < 1024 * 1024 * 1024, "RSS {rss} is over 1 GiB");
    // One logged reason per connection, and no panic.
    let panics = node.log_lines(&["panic"]);
    assert!(
        panics.is_empty(),
        "panics: {:?}",
        &panics[..panics.len().min(5)]
    );
    let mut per_peer: HashMap<String, usize> = HashMap::new();
    for line in node.log_lines(&["peer disconnected"]) {
        if let Some(peer) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("peer="))
        {
            *per_peer.entry(peer.to_string()).or_default() += 1;
        }
    }
    let twice: Vec<_> = per_peer.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "more than one disconnect line: {twice:?}");
    // Every connection the node accepted (ours, and mutated handshakes that still held) ended
    // with exactly one line.
    let mut connected: Vec<String> = node
        .log_lines(&["peer connected"])
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("peer="))
                .map(str::to_string)
        })
        .filter(|p| p.starts_with("fz"))
        .collect();
    connected.sort();
    let mut disconnected: Vec<String> = per_peer
        .keys()
        .filter(|p| p.starts_with("fz"))
        .cloned()
        .collect();
    disconnected.sort();
    assert_eq!(
        connected.len(),
        disconnected.len(),
        "every fuzz connection logged its end once"
    );
    assert_eq!(connected, disconnected);
    assert!(connected.len() >= counts.handshakes.load(Ordering::Relaxed));
    assert_eq!(
        node.stop(Duration::from_secs(20)),
        0,
        "clean exit on SIGTERM"
    );
}

async fn stats(probe: &mut Peer) -> Vec<(String, i64)> {
    let reply = probe
        .call(&atom("stats"), Duration::from_secs(10))
        .await
        .unwrap();
    let map = reply.as_tuple().unwrap()[1].clone();
    let Value::Map(entries) = map else {
        panic!("{map:?}")
    };
    entries
        .iter()
        .filter_map(|(k, v)| Some((k.as_atom()?.as_str().to_string(), v.as_int().unwrap_or(-1))))
        .collect()
}

fn get(stats: &[(String, i64)], key: &str) -> i64 {
    stats
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {key}"))
}

/// One connection: a handshake case, or a valid handshake and then request cases, maybe
/// followed by one case that may break the connection.
async fn one_connection(
    rng: &mut StdRng,
    port: u16,
    name: &str,
    node: Atom,
    counts: &Counts,
) -> Result<(), String> {
    counts.connections.fetch_add(1, Ordering::Relaxed);
    if rng.random_ratio(1, 12) {
        return handshake_case(rng, port, name, counts).await;
    }
    let atom_cache = rng.random_bool(0.5);
    let mut peer = Peer::connect(port, name, atom_cache)
        .await
        .map_err(|e| format!("valid handshake failed: {e}"))?;
    counts.handshakes.fetch_add(1, Ordering::Relaxed);
    // Valid requests interleaved with over-limit frames the connection must survive.
    let n = rng.random_range(1..20);
    for _ in 0..n {
        if rng.random_bool(HOSTILE_KEPT_SHARE) {
            counts.case(over_limit_kept_case(rng, &mut peer));
        } else {
            request_case(rng, &mut peer, node);
            counts.case("request");
        }
    }
    let breaker = rng.random_ratio(3, 4);
    if breaker {
        let kind = breaking_case(rng, &mut peer, node);
        counts.case(kind);
        if kind == "frame_length" {
            // The stream is out of step: we say no more, and the node must close on us.
            let _ = peer.flush().await;
            let _ = peer.stream.shutdown().await;
            let mut buf = vec![0u8; 65536];
            let deadline = Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, peer.stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {}
                    Err(_) => return Err("the node kept a half-closed connection".into()),
                }
            }
            counts.closed_by_node.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    }
    // A pass-through frame: a mutated distribution header may have put other atoms in the
    // node's cache slots for our atoms, which the node cannot know (nor can we).
    // Its tag is unlike every other (`peer.tag()` differs only in the first word), so that a
    // mutated call whose tag a mutation turned into the next one cannot pass for its reply.
    let tag = Value::Ref(Box::new(Ref::new(
        peer.me.node,
        peer.me.creation,
        &[0xC0DE, 0x5EED_F00D, 0xF1A1],
    )));
    let from = Value::Pid(Box::new(peer.me));
    let control = Value::tuple(vec![
        Value::Int(6),
        from.clone(),
        atom(""),
        atom("ash_gen_server"),
    ]);
    let message = Value::tuple(vec![
        atom("$gen_call"),
        Value::pair(from, tag.clone()),
        atom("ping"),
    ]);
    let mut body = vec![112];
    ash_gen_server::wire::etf::encode(&control, &mut body);
    ash_gen_server::wire::etf::encode(&message, &mut body);
    push_frame(&mut peer.writer.buf, &body);
    // A write may fail once the node has closed the connection.
    let written = peer.flush().await;
    let outcome = match written {
        Ok(()) => peer.reply(&tag, WAIT).await,
        Err(e) => Err(format!("closed: {e}")),
    };
    match outcome {
        Ok(v) if v == atom("pong") => {
            counts.kept.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Ok(v) => Err(format!("ping answered {v:?}")),
        Err(e) if breaker && e.starts_with("closed") => {
            counts.closed_by_node.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) if e.starts_with("unexpected frame") => Ok(()),
        Err(e) => Err(format!(
            "{} (after {}valid requests and over-limit frames only)",
            e,
            if breaker { "a breaking case, not " } else { "" }
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Handshakes

fn send_name(name: &str, flags: u64, creation: u32) -> Vec<u8> {
    let mut body = vec![b'N'];
    body.extend_from_slice(&flags.to_be_bytes());
    body.extend_from_slice(&creation.to_be_bytes());
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    with_len16(body)
}

fn with_len16(body: Vec<u8>) -> Vec<u8> {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend(body);
    out
}

async fn handshake_case(
    rng: &mut StdRng,
    port: u16,
    name: &str,
    counts: &Counts,
) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let flags = ash_gen_server::wire::handshake::offered_flags().bits();
    let kind = rng.random_range(0..3);
    let kind_name = match kind {
        0 => {
            let mut msg = send_name(name, flags, rng.random());
            mutate(rng, &mut msg);
            let _ = stream.write_all(&msg).await;
            "handshake_name"
        }
        1 => {
            // A valid name, then a mutated challenge reply.
            let _ = stream
                .write_all(&send_name(name, flags, rng.random()))
                .await;
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            // Status ("sok") and challenge ('N' ...): read until both are in, bounded.
            let deadline = Instant::now() + WAIT;
            let challenge = loop {
                if let Some(c) = parse_challenge(&got) {
                    break Some(c);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break None,
                    Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    Err(_) => return Err("handshake: no challenge from the node".into()),
                }
            };
            if let Some(challenge) = challenge {
                let digest = md5::compute(format!("{COOKIE}{challenge}"));
                let mut body = vec![b'r'];
                body.extend_from_slice(&rng.random::<u32>().to_be_bytes());
                body.extend_from_slice(&digest.0);
                let mut msg = with_len16(body);
                mutate(rng, &mut msg);
                let _ = stream.write_all(&msg).await;
            }
            "handshake_challenge_reply"
        }
        _ => {
            let mut junk = vec![0u8; rng.random_range(0..300)];
            rng.fill_bytes(&mut junk);
            let _ = stream.write_all(&junk).await;
            "handshake_raw_bytes"
        }
    };
    counts.case(kind_name);
    // We say no more: the node must finish with us (close) in bounded time, whatever it read.
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
            Err(_) => return Err(format!("{kind_name}: the node kept the connection open")),
        }
    }
}

/// The challenge in the node's `sok` + `N...` handshake messages, once both are in `bytes`.
fn parse_challenge(bytes: &[u8]) -> Option<u32> {
    let mut rest = bytes;
    let mut messages = Vec::new();
    while rest.len() >= 2 {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        if rest.len() < 2 + len {
            break;
        }
        messages.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    messages
        .iter()
        .find(|m| m.first() == Some(&b'N') && m.len() >= 17)
        .map(|m| u32::from_be_bytes([m[9], m[10], m[11], m[12]]))
}

// ---------------------------------------------------------------------------------------------
// Terms

const RESOURCES: &[&str] = &["fz_a", "fz_b", "fz_c"];
const FIELDS: &[&str] = &["id", "n", "email", "name", "v", "nil"];
const REQUESTS: &[&str] = &[
    "define",
    "create",
    "upsert",
    "bulk_create",
    "get",
    "update",
    "destroy",
    "update_where",
    "destroy_where",
    "query",
    "aggregate",
    "whereis",
    "keep_alive",
    "subscribe",
    "unsubscribe",
    "info",
    "resources",
    "clear",
    "ping",
    "stats",
    "fault",
    "nope",
];

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn node_pid(rng: &mut StdRng, node: Atom) -> Pid {
    Pid {
        node,
        id: rng.random_range(0..300),
        serial: 0,
        creation: rng.random_range(0..4),
    }
}

fn value(rng: &mut StdRng, depth: usize, node: Atom) -> Value {
    let leaf = depth >= 4 || rng.random_ratio(1, 2);
    match rng.random_range(0..if leaf { 9 } else { 13 }) {
        0 => Value::Int(rng.random_range(-3..300)),
        1 => Value::Int(rng.random()),
        2 => Value::Float(match rng.random_range(0..6) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => -0.0,
            _ => rng.random::<f64>() * 1e6,
        }),
        3 => atom(pick(
            rng,
            &["nil", "true", "false", "asc", "desc", "eq", "ok", "x"],
        )),
        4 => atom(pick(rng, FIELDS)),
        5 => {
            let mut b = vec![0u8; rng.random_range(0..12)];
            rng.fill_bytes(&mut b);
            Value::binary(&b)
        }
        6 => Value::Pid(Box::new(node_pid(rng, node))),
        7 => Value::Ref(Box::new(Ref::new(node, 1, &[rng.random(), 2, 3]))),
        8 => parse_term("123456789012345678901234567890123456789").unwrap(),
        9 => Value::list(
            (0..rng.random_range(0..5))
                .map(|_| value(rng, depth + 1, node))
                .collect(),
        ),
        10 => Value::tuple(
            (0..rng.random_range(0..5))
                .map(|_| value(rng, depth + 1, node))
                .collect(),
        ),
        11 => record(rng, depth + 1, node),
        _ => filter(rng, depth + 1, node),
    }
}

fn record(rng: &mut StdRng, depth: usize, node: Atom) -> Value {
    let mut entries = vec![(atom("id"), Value::Int(rng.random_range(0..20)))];
    for _ in 0..rng.random_range(0..4) {
        entries.push((atom(pick(rng, FIELDS)), value(rng, depth + 1, node)));
    }
    if rng.random_ratio(1, 10) {
        entries.remove(0);
    }
    Value::map(entries)
}

fn filter(rng: &mut StdRng, depth: usize, node: Atom) -> Value {
    if depth > 5 {
        return atom("true");
    }
    let op = pick(
        rng,
        &[
            "eq", "neq", "lt", "gt", "in", "is_nil", "contains", "and", "or", "not", "expr",
        ],
    );
    match op {
        "and" | "or" => Value::tuple(vec![
            atom(op),
            filter(rng, depth + 1, node),
            filter(rng, depth + 1, node),
        ]),
        "not" => Value::pair(atom(op), filter(rng, depth + 1, node)),
        "is_nil" => Value::pair(atom(op), atom(pick(rng, FIELDS))),
        "expr" => Value::pair(
            atom(op),
            Value::tuple(vec![
                atom(pick(rng, &["+", "/", "eq", "concat"])),
                Value::pair(atom("ref"), atom("n")),
                Value::pair(atom("value"), value(rng, depth + 1, node)),
            ]),
        ),
        _ => Value::tuple(vec![
            atom(op),
            atom(pick(rng, FIELDS)),
            value(rng, depth + 1, node),
        ]),
    }
}

fn request(rng: &mut StdRng, node: Atom) -> Value {
    let tag = pick(rng, REQUESTS);
    let res = if rng.random_ratio(1, 12) {
        value(rng, 3, node)
    } else if rng.random_ratio(1, 10) {
        Value::pair(atom(pick(rng, RESOURCES)), value(rng, 3, node))
    } else {
        atom(pick(rng, RESOURCES))
    };
    let pk = || -> Value { Value::map(vec![(atom("id"), Value::Int(0))]) };
    let mut args = vec![atom(tag), res];
    match tag {
        "define" => args.push(Value::map(vec![
            (atom("primary_key"), Value::list(vec![atom("id")])),
            (
                atom(pick(
                    rng,
                    &[
                        "inactivity_timeout",
                        "maximum_lifetime",
                        "identities",
                        "types",
                        "max_restarts",
                    ],
                )),
                value(rng, 2, node),
            ),
        ])),
        "create" | "upsert" => args.push(record(rng, 0, node)),
        "bulk_create" => args.push(Value::list(
            (0..rng.random_range(0..6))
                .map(|_| record(rng, 0, node))
                .collect(),
        )),
        "get" | "whereis" | "keep_alive" | "destroy" => {
            let mut p = pk();
            if rng.random_ratio(1, 2) {
                p = Value::map(vec![(atom("id"), Value::Int(rng.random_range(0..20)))]);
            }
            args.push(p);
        }
        "update" => {
            args.push(Value::map(vec![(
                atom("id"),
                Value::Int(rng.random_range(0..20)),
            )]));
            args.push(record(rng, 0, node));
        }
        "query" | "update_where" | "destroy_where" | "aggregate" => {
            args.push(Value::map(vec![
                (atom("filter"), filter(rng, 0, node)),
                (atom("limit"), value(rng, 3, node)),
            ]));
            if tag == "aggregate" {
                args.push(Value::list(vec![Value::tuple(vec![
                    atom("c"),
                    atom(pick(rng, &["count", "sum", "min", "list", "avg"])),
                    atom(pick(rng, FIELDS)),
                    Value::map(vec![]),
                ])]));
            }
        }
        _ => {}
    }
    // Now and then extra or missing arguments, or a random value in place of one.
    if rng.random_ratio(1, 8) {
        args.push(value(rng, 2, node));
    }
    if rng.random_ratio(1, 8) && args.len() > 1 {
        let i = rng.random_range(1..args.len());
        args[i] = value(rng, 1, node);
    }
    if args.len() == 2
        && rng.random_ratio(1, 2)
        && ["ping", "stats", "resources", "subscribe", "unsubscribe"].contains(&tag)
    {
        return atom(tag);
    }
    Value::tuple(args)
}

/// A valid frame: a call with a random request, or a message or signal to a random pid.
fn request_case(rng: &mut StdRng, peer: &mut Peer, node: Atom) {
    let me = peer.pid(rng.random_range(1..4));
    let to = node_pid(rng, node);
    match rng.random_range(0..10) {
        0..=5 => {
            let r = request(rng, node);
            peer.queue_call("ash_gen_server", &r);
        }
        6 => {
            let m = value(rng, 0, node);
            let to_name =
                Atom::new(pick(rng, &["ash_gen_server", "net_kernel", "nobody"])).unwrap();
            peer.writer.reg_send(&me, to_name, |w| w.term(&m));
        }
        7 => {
            let tag = peer.tag();
            let m = Value::tuple(vec![
                atom("$gen_call"),
                Value::pair(Value::Pid(Box::new(me)), tag),
                value(rng, 0, node),
            ]);
            peer.writer.send(&to, |w| w.term(&m));
        }
        8 => {
            let r = Ref::new(me.node, me.creation, &[rng.random(), 1, 2]);
            match rng.random_range(0..3) {
                0 => peer
                    .writer
                    .monitor(&me, &ash_gen_server::wire::dist::ProcRef::Pid(to), &r),
                1 => peer
                    .writer
                    .demonitor(&me, &ash_gen_server::wire::dist::ProcRef::Pid(to), &r),
                _ => peer.writer.monitor(
                    &me,
                    &ash_gen_server::wire::dist::ProcRef::Name(
                        Atom::new("ash_gen_server").unwrap(),
                    ),
                    &r,
                ),
            }
        }
        _ => {
            // LINK, UNLINK, EXIT2 (not kill: records of other cases may go, but only fuzz ones).
            let reason = atom(pick(rng, &["normal", "shutdown", "boom"]));
            match rng.random_range(0..3) {
                0 => raw_control(
                    peer,
                    Value::tuple(vec![
                        Value::Int(1),
                        Value::Pid(Box::new(me)),
                        Value::Pid(Box::new(to)),
                    ]),
                    None,
                ),
                1 => raw_control(
                    peer,
                    Value::tuple(vec![
                        Value::Int(4),
                        Value::Pid(Box::new(me)),
                        Value::Pid(Box::new(to)),
                    ]),
                    None,
                ),
                _ => peer.writer.exit(&me, &to, &reason),
            }
        }
    }
}

/// Appends a frame whose control message is `control` (and maybe a payload), atom cache or not.
fn raw_control(peer: &mut Peer, control: Value, payload: Option<Value>) {
    let mut body = Vec::new();
    if peer.writer.atom_cache() {
        body.extend_from_slice(&[131, 68, 0]);
        ash_gen_server::wire::etf::TermWriter::plain(&mut body).term(&control);
        if let Some(p) = &payload {
            ash_gen_server::wire::etf::TermWriter::plain(&mut body).term(p);
        }
    } else {
        body.push(112);
        ash_gen_server::wire::etf::encode(&control, &mut body);
        if let Some(p) = &payload {
            ash_gen_server::wire::etf::encode(p, &mut body);
        }
    }
    push_frame(&mut peer.writer.buf, &body);
}

fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

// ---------------------------------------------------------------------------------------------
// Cases that may break the connection

fn breaking_case(rng: &mut StdRng, peer: &mut Peer, node: Atom) -> &'static str {
    let me = peer.me;
    match rng.random_range(0..20) {
        // A valid frame's bytes mutated (length prefix kept consistent, mostly).
        0..=7 => {
            let mut w = FrameWriter::new(peer.writer.atom_cache());
            let r = request(rng, node);
            let tag = peer.tag();
            let m = Value::tuple(vec![
                atom("$gen_call"),
                Value::pair(Value::Pid(Box::new(me)), tag),
                r,
            ]);
            w.reg_send(&me, Atom::new("ash_gen_server").unwrap(), |tw| tw.term(&m));
            let mut body = w.buf[4..].to_vec();
            mutate(rng, &mut body);
            if rng.random_ratio(1, 8) {
                // The length lies too: the node may wait for bytes that never come.
                let mut len = w.buf[..4].to_vec();
                mutate(rng, &mut len);
                peer.writer.buf.extend_from_slice(&len[..len.len().min(4)]);
                peer.writer.buf.extend_from_slice(&body);
                return "frame_length";
            } else {
                push_frame(&mut peer.writer.buf, &body);
            }
            if peer.writer.atom_cache() {
                "control_payload_cached"
            } else {
                "control_payload"
            }
        }
        // The distribution header (atom cache) of a valid frame mutated.
        8..=10 => {
            let mut w = FrameWriter::new(true);
            let m = record(rng, 0, node);
            w.reg_send(&me, Atom::new("ash_gen_server").unwrap(), |tw| tw.term(&m));
            let mut body = w.buf[4..].to_vec();
            // Mutate only within the header: after 131, 68.
            let header_end = 3 + (body[2] as usize) * 3 + 16;
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(2..header_end.min(body.len()).max(3));
                if i < body.len() {
                    body[i] = interesting(rng);
                }
            }
            push_frame(&mut peer.writer.buf, &body);
            "atom_cache_header"
        }
        // Over the limits, some with lying counts.
        11..=13 => {
            let variant = rng.random_range(0..4);
            let term = over_limit_term(rng, variant, 20_000);
            over_limit_call(peer, &term);
            "over_limits"
        }
        14..=15 => {
            // A huge length prefix, then a little.
            let len: u32 = rng.random_range(64 * 1024 * 1024 + 1..u32::MAX);
            peer.writer.buf.extend_from_slice(&len.to_be_bytes());
            peer.writer.buf.extend_from_slice(&[112, 131, 106]);
            "huge_length"
        }
        _ => {
            let mut junk = vec![0u8; rng.random_range(1..2000)];
            rng.fill_bytes(&mut junk);
            if rng.random_ratio(1, 2) {
                junk[0] = 112;
            }
            push_frame(&mut peer.writer.buf, &junk);
            "raw_bytes"
        }
    }
}

/// An ETF term (with its 131) over one of the default limits: `variant` 0 nests 301 to
/// `max_depth` tuples deep, 1 is a list of 2^20 + 1 elements, 2 a bignum of 5,000 bytes (all with their
/// bytes present); 3 claims a count its bytes do not hold.
fn over_limit_term(rng: &mut StdRng, variant: u32, max_depth: usize) -> Vec<u8> {
    let mut term = vec![131u8];
    match variant {
        0 => {
            let deep = rng.random_range(301..max_depth);
            for _ in 0..deep {
                term.extend_from_slice(&[104, 1]);
            }
            term.push(106);
        }
        1 => {
            let n = (1 << 20) + 1;
            term.extend_from_slice(&[108]);
            term.extend_from_slice(&(n as u32).to_be_bytes());
            term.extend(std::iter::repeat_n(106u8, n + 1));
        }
        2 => {
            let n = 5000usize;
            term.push(111);
            term.extend_from_slice(&(n as u32).to_be_bytes());
            term.push(0);
            term.extend(std::iter::repeat_n(7u8, n));
        }
        _ => {
            term.extend_from_slice(&[pick_byte(rng, &[104, 105, 108, 116, 109, 111, 107, 118])]);
            term.extend_from_slice(&rng.random::<u32>().to_be_bytes());
            term.push(106);
        }
    }
    term
}

/// Appends `{'$gen_call', {From, Tag}, Term}` to `ash_gen_server`, `term` as raw ETF bytes.
fn over_limit_call(peer: &mut Peer, term: &[u8]) {
    let me = peer.me;
    let tag = peer.tag();
    let from = Value::Pid(Box::new(me));
    let mut body = vec![112];
    ash_gen_server::wire::etf::encode(
        &Value::tuple(vec![
            Value::Int(6),
            from.clone(),
            atom(""),
            atom("ash_gen_server"),
        ]),
        &mut body,
    );
    let mut call = vec![131u8, 104, 3];
    ash_gen_server::wire::etf::TermWriter::plain(&mut call).term(&atom("$gen_call"));
    ash_gen_server::wire::etf::TermWriter::plain(&mut call).term(&Value::pair(from, tag));
    call.extend_from_slice(&term[1..]);
    body.extend_from_slice(&call);
    push_frame(&mut peer.writer.buf, &body);
}

/// A hostile case the node must survive *with the connection*: a call nesting too deep or
/// holding a bignum over the limit (answered `bad_request`), or the same as a plain message to
/// `ash_gen_server` (dropped and logged), as PROTOCOL.md "Limits" says.
fn over_limit_kept_case(rng: &mut StdRng, peer: &mut Peer) -> &'static str {
    let variant = pick_u32_of(rng, &[0, 2]);
    // Not as deep as a breaking case may go: these come many times per connection.
    let term = over_limit_term(rng, variant, 2_000);
    if rng.random_bool(0.7) {
        over_limit_call(peer, &term);
        "over_limits_call_kept"
    } else {
        let me = peer.me;
        let mut body = vec![112];
        ash_gen_server::wire::etf::encode(
            &Value::tuple(vec![
                Value::Int(6),
                Value::Pid(Box::new(me)),
                atom(""),
                atom("ash_gen_server"),
            ]),
            &mut body,
        );
        body.extend_from_slice(&term);
        push_frame(&mut peer.writer.buf, &body);
        "over_limits_message_kept"
    }
}

fn pick_u32_of(rng: &mut StdRng, items: &[u32]) -> u32 {
    items[rng.random_range(0..items.len())]
}

fn pick_byte(rng: &mut StdRng, bytes: &[u8]) -> u8 {
    bytes[rng.random_range(0..bytes.len())]
}

fn interesting(rng: &mut StdRng) -> u8 {
    if rng.random_ratio(1, 3) {
        rng.random()
    } else {
        pick_byte(
            rng,
            &[
                0, 1, 0x7f, 0x80, 0xff, 0xfe, 131, 68, 82, 97, 104, 106, 107, 108, 109, 110, 111,
                116, 118, 119, 8, 0x0f,
            ],
        )
    }
}

/// Byte-level mutations: bit flips, interesting bytes, insertions, deletions, duplication,
/// truncation, lying 32-bit lengths.
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..5) {
        let len = bytes.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                bytes[i] = interesting(rng);
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..8);
                for _ in 0..n {
                    bytes.insert(i, interesting(rng));
                }
            }
            3 if len > 1 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(8));
                bytes.drain(i..i + n);
            }
            4 if len > 1 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(16));
                let copy: Vec<u8> = bytes[i..i + n].to_vec();
                let at = rng.random_range(0..=bytes.len());
                bytes.splice(at..at, copy);
            }
            5 if len > 1 => {
                bytes.truncate(rng.random_range(1..len));
            }
            6 if len >= 4 => {
                let i = rng.random_range(0..=len - 4);
                let v: u32 = pick_u32(rng);
                bytes[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ => {}
        }
    }
}

fn pick_u32(rng: &mut StdRng) -> u32 {
    match rng.random_range(0..4) {
        0 => u32::MAX,
        1 => 0x7fff_ffff,
        2 => rng.random_range(0..1000),
        _ => rng.random(),
    }
}
