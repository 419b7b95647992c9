//! The node as a library: started in-process with its own EPMD on a free port, driven over real
//! TCP by the crate's one-shot caller and by a real `erl` node pointed at that EPMD.

use ash_gen_server::client;
use ash_gen_server::node::{EpmdMode, Node, NodeConfig, RunningNode};
use ash_gen_server::protocol::{Options, Server};
use ash_gen_server::term::{Value, parse_term};
use std::process::Command;
use std::time::Duration;

const COOKIE: &str = "node-test-cookie";

async fn start(name: &str, fault_injection: bool) -> (RunningNode, u16) {
    let config = NodeConfig {
        name: format!("{name}@127.0.0.1").parse().unwrap(),
        cookie: COOKIE.into(),
        port: 0,
        bind: "127.0.0.1".parse().unwrap(),
        // Any free port, taken by the node itself: no race with other tests.
        epmd_port: 0,
        epmd_mode: EpmdMode::Embedded,
        net_ticktime: Duration::from_secs(60),
        busy_poll: Duration::from_micros(100),
        tls: None,
        limits: Default::default(),
    };
    let running = Node::start(config).await.expect("node starts");
    // The server lives as long as the node (its tasks end with the runtime).
    Server::start(
        &running.node,
        Options {
            fault_injection,
            ..Options::default()
        },
    )
    .expect("server starts");
    assert!(running.embedded_epmd);
    let epmd_port = running.node.config.epmd_port;
    assert_ne!(epmd_port, 0);
    (running, epmd_port)
}

async fn call(running: &RunningNode, epmd_port: u16, request: &str) -> Value {
    client::call(
        &running.node.config.name,
        COOKIE,
        epmd_port,
        None,
        "ash_gen_server",
        &parse_term(request).unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap_or_else(|e| panic!("{request}: {e}"))
}

fn t(text: &str) -> Value {
    parse_term(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_protocol_over_real_connections() {
    let (node, epmd) = start(&format!("lib_crud_{}", std::process::id()), false).await;
    assert_eq!(call(&node, epmd, "ping").await, t("pong"));
    assert_eq!(
        call(&node, epmd, "{define, user, #{primary_key => [id]}}").await,
        t("ok")
    );
    assert_eq!(
        call(
            &node,
            epmd,
            "{create, user, #{id => 1, name => <<\"ann\">>, age => 40}}"
        )
        .await,
        t("{ok, #{id => 1, name => <<\"ann\">>, age => 40}}")
    );
    assert_eq!(
        call(&node, epmd, "{create, user, #{id => 1}}").await,
        t("{error, {already_exists, #{id => 1}}}")
    );
    assert_eq!(
        call(
            &node,
            epmd,
            "{update, user, #{id => 1}, #{id => 2, age => 41}}"
        )
        .await,
        t("{ok, #{id => 2, name => <<\"ann\">>, age => 41}}")
    );
    assert_eq!(
        call(&node, epmd, "{get, user, #{id => 1}}").await,
        t("{error, not_found}")
    );
    assert_eq!(
        call(&node, epmd, "{query, user, #{filter => {gt, age, 40}}}").await,
        t("{ok, [#{id => 2, name => <<\"ann\">>, age => 41}]}")
    );
    assert_eq!(
        call(
            &node,
            epmd,
            "{destroy, user, #{id => 2}, #{filter => {eq, age, 0}}}"
        )
        .await,
        t("{error, stale}")
    );
    assert_eq!(
        call(&node, epmd, "{destroy, user, #{id => 2}}").await,
        t("ok")
    );
    assert_eq!(
        call(&node, epmd, "{get, nobody, #{id => 1}}").await,
        t("{error, {unknown_resource, nobody}}")
    );
    assert_eq!(
        call(&node, epmd, "{get, user, 1}").await,
        t("{error, {bad_request, <<\"a primary key must be a map of its fields, got: 1\">>}}")
    );
    assert_eq!(
        call(&node, epmd, "{fault, user, #{id => 1}, panic}").await,
        t("{error, fault_injection_disabled}")
    );
    node.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_record_comes_back_with_its_last_committed_state() {
    let (node, epmd) = start(&format!("lib_fault_{}", std::process::id()), true).await;
    call(
        &node,
        epmd,
        "{define, item, #{primary_key => [id], max_restarts => 1, max_seconds => 60}}",
    )
    .await;
    call(&node, epmd, "{create, item, #{id => 7, n => 0}}").await;
    call(&node, epmd, "{update, item, #{id => 7}, #{n => 1}}").await;
    call(&node, epmd, "{update, item, #{id => 7}, #{n => 2}}").await;
    let crashed = call(&node, epmd, "{fault, item, #{id => 7}, panic}").await;
    assert!(
        format!("{crashed:?}").starts_with("{error,{record_crashed,{panic,"),
        "{crashed:?}"
    );
    assert_eq!(
        call(&node, epmd, "{get, item, #{id => 7}}").await,
        t("{ok, #{id => 7, n => 2}}")
    );
    // The second failure within the window is one too many: the record is removed.
    let crashed = call(&node, epmd, "{fault, item, #{id => 7}, error}").await;
    assert!(
        format!("{crashed:?}").contains("internal_error"),
        "{crashed:?}"
    );
    assert_eq!(
        call(&node, epmd, "{get, item, #{id => 7}}").await,
        t("{error, not_found}")
    );
    node.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_erl_node_uses_the_embedded_epmd_and_sees_a_hidden_node() {
    if Command::new("erl").arg("-version").output().is_err() {
        panic!("erl is not installed: run scripts/setup.sh (the test suite needs Erlang/OTP)");
    }
    let name = format!("lib_erl_{}", std::process::id());
    let (node, epmd) = start(&name, false).await;
    call(&node, epmd, "{define, kv, #{primary_key => [k]}}").await;
    let script = format!(
        "N = '{name}@127.0.0.1', \
         pong = net_adm:ping(N), \
         true = lists:member(N, nodes(hidden)), \
         false = lists:member(N, nodes()), \
         {{ok, _}} = gen_server:call({{ash_gen_server, N}}, {{create, kv, #{{k => <<\"a\">>, v => [1, 2.5, {{x}}]}}}}), \
         {{ok, #{{v := [1, 2.5, {{x}}]}}}} = gen_server:call({{ash_gen_server, N}}, {{get, kv, #{{k => <<\"a\">>}}}}), \
         io:format(\"erl-ok~n\"), halt(0)."
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new("erl")
            .env("ERL_EPMD_PORT", epmd.to_string())
            .args([
                "-name",
                &format!("lib_peer_{}@127.0.0.1", std::process::id()),
                "-setcookie",
                COOKIE,
                "-noshell",
                "-eval",
                &script,
            ])
            .output()
    })
    .await
    .unwrap()
    .expect("erl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("erl-ok"),
        "erl failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    node.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_refused() {
    let (node, epmd) = start(&format!("lib_cookie_{}", std::process::id()), false).await;
    let refused = client::call(
        &node.node.config.name,
        "not-the-cookie",
        epmd,
        None,
        "ash_gen_server",
        &t("ping"),
        Duration::from_secs(5),
    )
    .await;
    assert!(refused.is_err(), "a wrong cookie got through: {refused:?}");
    // The node is still fine.
    assert_eq!(call(&node, epmd, "ping").await, t("pong"));
    node.shutdown(Duration::from_secs(5)).await;
}

/// Two Rust nodes over a real connection (the second registered with the first's EPMD, dialled
/// by the first): messages both ways, a monitor and a link across, each firing with the exact
/// reason, and a disconnect that drops the links and monitors without killing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rust_nodes_send_monitor_and_link_across() {
    use ash_gen_server::node::{Mailbox, Signal};
    let (a, epmd) = start(&format!("rr_a_{}", std::process::id()), false).await;
    let config = NodeConfig {
        name: format!("rr_b_{}@127.0.0.1", std::process::id())
            .parse()
            .unwrap(),
        cookie: COOKIE.into(),
        port: 0,
        bind: "127.0.0.1".parse().unwrap(),
        epmd_port: epmd,
        epmd_mode: EpmdMode::External,
        net_ticktime: Duration::from_secs(60),
        busy_poll: Duration::from_micros(100),
        tls: None,
        limits: Default::default(),
    };
    let b = Node::start(config).await.expect("the second node starts");
    Server::start(
        &b.node,
        Options {
            fault_injection: true,
            ..Options::default()
        },
    )
    .expect("server starts");
    let wait = Duration::from_secs(10);
    let on_a = Mailbox::new(&a.node);
    let on_b = Mailbox::new(&b.node);
    a.node
        .connect(&b.node.config.name)
        .await
        .expect("a dials b");
    assert_eq!(a.node.peers(), vec![b.node.config.name.to_string()]);

    // Messages both ways.
    assert!(a.node.send(&on_b.pid(), &t("{hello, from_a}")));
    assert_eq!(
        on_b.recv(wait).await,
        Some(Signal::Message(t("{hello, from_a}")))
    );
    assert!(b.node.send(&on_a.pid(), &t("{hello, from_b}")));
    assert_eq!(
        on_a.recv(wait).await,
        Some(Signal::Message(t("{hello, from_b}")))
    );

    // A record on b, monitored and linked from a.
    let server = |req: &str| {
        let req = t(req);
        async { on_b.call("ash_gen_server", req, wait).await.unwrap() }
    };
    assert_eq!(
        server("{define, item, #{primary_key => [id]}}").await,
        t("ok")
    );
    server("{create, item, #{id => 1}}").await;
    server("{create, item, #{id => 2}}").await;
    let pid_of = |v: Value| match v.as_tuple().map(|t| t[1].clone()) {
        Some(Value::Pid(p)) => *p,
        other => panic!("{other:?}"),
    };
    let watched = pid_of(server("{whereis, item, #{id => 1}}").await);
    let linked = pid_of(server("{whereis, item, #{id => 2}}").await);
    let reference = on_a.monitor(&watched);
    assert!(on_a.link(&linked));
    // The monitor and the link are in place on b before anything fires.
    for _ in 0..500 {
        let (_, monitors, _, links) = b.node.processes.sizes();
        if monitors >= 1 && links >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, monitors, _, links) = b.node.processes.sizes();
    assert_eq!((monitors, links), (1, 1));

    // Destroyed: the monitor fires with normal.
    assert_eq!(server("{destroy, item, #{id => 1}}").await, t("ok"));
    assert_eq!(
        on_a.recv(wait).await,
        Some(Signal::Down {
            reference,
            target: watched,
            reason: t("normal")
        })
    );
    // Crashed: the link carries the crash reason.
    let crashed = server("{fault, item, #{id => 2}, error}").await;
    let reason = crashed.as_tuple().unwrap()[1].as_tuple().unwrap()[1].clone();
    assert_eq!(
        on_a.recv(wait).await,
        Some(Signal::Exit {
            from: linked,
            reason,
            link: true
        })
    );

    // A link and a monitor on the restarted record, then the connection goes: b forgets them,
    // and the record lives on.
    let restarted = pid_of(server("{whereis, item, #{id => 2}}").await);
    assert!(on_a.link(&restarted));
    let _ = on_a.monitor(&restarted);
    for _ in 0..500 {
        if b.node.processes.sizes().3 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.node.close_all();
    for _ in 0..500 {
        if b.node.peers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b.node.peers().is_empty());
    let (_, monitors, _, links) = b.node.processes.sizes();
    assert_eq!((monitors, links), (0, 0));
    assert_eq!(
        server("{get, item, #{id => 2}}").await,
        t("{ok, #{id => 2}}")
    );
    b.shutdown(Duration::from_secs(5)).await;
    a.shutdown(Duration::from_secs(5)).await;
}

/// A client node without a listening socket (as the bench's load generator is) calls a peer's
/// registered `ash_gen_server` by name through mailboxes: one caller at a time (the node's
/// reader ends up busy-polling for it), then 64 at once on the same connection (the reader
/// serves batches; the client, its peer busy, writes each burst of requests at once), then
/// one at a time again, every reply the right record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_call_a_peer_by_name_one_at_a_time_and_in_batches() {
    use ash_gen_server::node::{Mailbox, mailbox::CallError};
    use std::sync::Arc;
    let (a, epmd) = start(&format!("mb_server_{}", std::process::id()), false).await;
    let client = client_node("mb_client", epmd);
    let server = a.node.config.name.clone();
    let wait = Duration::from_secs(10);
    let me = Mailbox::new(&client);

    // A node that is not there: refused, not a timeout.
    let nobody = format!("mb_nobody_{}@127.0.0.1", std::process::id())
        .parse()
        .unwrap();
    assert!(matches!(
        me.call_remote(&nobody, "ash_gen_server", t("ping"), wait)
            .await,
        Err(CallError::Unreachable { .. })
    ));
    assert_eq!(
        me.call_remote(&server, "ash_gen_server", t("ping"), wait)
            .await
            .unwrap(),
        t("pong")
    );
    let request = |s: String| t(&s);
    assert_eq!(
        me.call_remote(
            &server,
            "ash_gen_server",
            t("{define, item, #{primary_key => [id]}}"),
            wait
        )
        .await
        .unwrap(),
        t("ok")
    );
    let records: Vec<String> = (1..=64).map(|i| format!("#{{id => {i}}}")).collect();
    me.call_remote(
        &server,
        "ash_gen_server",
        request(format!(
            "{{bulk_create, item, [{}], #{{}}}}",
            records.join(", ")
        )),
        wait,
    )
    .await
    .unwrap();

    // One caller, request after request.
    let get = |id: u32| {
        me.call_remote(
            &server,
            "ash_gen_server",
            request(format!("{{get, item, #{{id => {id}}}}}")),
            wait,
        )
    };
    for i in 0..300 {
        let id = i % 64 + 1;
        let reply = get(id).await.unwrap();
        assert_eq!(reply, request(format!("{{ok, #{{id => {id}}}}}")));
    }

    // 64 callers at once on the same connection, each updating its own record.
    let mut callers = Vec::new();
    for id in 1..=64 {
        let client = Arc::clone(&client);
        let server = server.clone();
        callers.push(tokio::spawn(async move {
            let me = Mailbox::new(&client);
            for n in 0..50 {
                let reply = me
                    .call_remote(
                        &server,
                        "ash_gen_server",
                        t(&format!("{{update, item, #{{id => {id}}}, #{{n => {n}}}}}")),
                        wait,
                    )
                    .await
                    .unwrap();
                assert_eq!(reply, t(&format!("{{ok, #{{id => {id}, n => {n}}}}}")));
            }
        }));
    }
    for caller in callers {
        caller.await.expect("a caller failed");
    }

    // One caller again on the same connection: after the bursts (whose requests went out
    // together, the replies coming back in batches) each call is answered as before.
    for id in 1..=64 {
        let reply = get(id).await.unwrap();
        assert_eq!(reply, request(format!("{{ok, #{{id => {id}, n => 49}}}}")));
    }
}

/// A node without a listening socket (a client, as the bench's load generator is), named
/// `Prefix_<os pid>@127.0.0.1`, finding its peers through the EPMD on `epmd`.
fn client_node(prefix: &str, epmd: u16) -> std::sync::Arc<Node> {
    let mut config = NodeConfig::new(
        format!("{prefix}_{}@127.0.0.1", std::process::id())
            .parse()
            .unwrap(),
        COOKIE.into(),
    );
    config.epmd_port = epmd;
    Node::new(config, 9).unwrap()
}

/// A process that never answers.
struct Silent;

impl ash_gen_server::node::Process for Silent {
    fn deliver(
        &self,
        _node: &std::sync::Arc<Node>,
        _from: Option<ash_gen_server::term::Pid>,
        _message: Value,
    ) {
    }
}

/// A watched call (`Mailbox::call_remote_watched`, what a member forwarding a request to the
/// leader makes) to a peer whose connection goes down while it waits ends at once as
/// unreachable; the same call unwatched would wait for its whole timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_call_ends_when_the_peer_goes() {
    use ash_gen_server::node::{Mailbox, mailbox::CallError};
    let (a, epmd) = start(&format!("watched_server_{}", std::process::id()), false).await;
    a.node
        .register("silent", |_| std::sync::Arc::new(Silent))
        .expect("registered");
    let client = client_node("watched_client", epmd);
    let server = a.node.config.name.clone();
    let me = Mailbox::new(&client);
    // Answered as any call is.
    assert_eq!(
        me.call_remote_watched(
            &server,
            "ash_gen_server",
            t("ping"),
            Duration::from_secs(10)
        )
        .await
        .unwrap(),
        t("pong")
    );
    // No answer, then the server goes: the call ends long before its 120 s.
    let waiting = tokio::spawn(async move {
        me.call_remote_watched(&server, "silent", t("ping"), Duration::from_secs(120))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "no answer yet: still waiting");
    a.shutdown(Duration::from_secs(5)).await;
    let ended = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the call ends once the connection is gone")
        .unwrap();
    assert!(
        matches!(ended, Err(CallError::Unreachable { .. })),
        "{ended:?}"
    );
    // Nothing left watched on the client.
    let (_, _, watching, _) = client.processes.sizes();
    assert_eq!(watching, 0);
}
