//! The `ash-gen-server` command as a user runs it: `start` (with its own EPMD on a free port and
//! a resources file), `call` against it, and a clean stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ash-gen-server");

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn call(node: &str, epmd: u16, request: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "call",
            "--node",
            node,
            "--cookie",
            "cli-test",
            "--epmd-port",
        ])
        .arg(epmd.to_string())
        .arg(request)
        .output()
        .expect("call runs");
    assert!(
        out.status.success(),
        "call {request} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The lines `output` writes, as they come, from a thread of their own.
fn lines(output: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

#[test]
fn start_call_and_stop() {
    let dir = std::env::temp_dir().join(format!("ash-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resources = dir.join("resources.json");
    std::fs::write(
        &resources,
        r#"[{"resource": "session", "primary_key": ["id"], "inactivity_timeout": 60000}]"#,
    )
    .unwrap();
    let name = format!("cli{}@127.0.0.1", std::process::id());
    let mut child = Command::new(BIN)
        .args([
            "start", "--name", &name, "--cookie", "cli-test", "--epmd", "embedded",
        ])
        .args(["--epmd-port", "0"])
        .arg("--resources")
        .arg(&resources)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the node starts");
    let stdout = child.stdout.take().unwrap();
    let node = Node(child);

    // Wait (bounded) for the ready line.
    let rx = lines(stdout);
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.starts_with("ready ") => break line,
            Ok(_) => continue,
            Err(_) => panic!("no ready line within 20 s"),
        }
    };
    assert!(
        ready.contains(&name) && ready.contains("epmd=embedded"),
        "{ready}"
    );
    let epmd: u16 = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("epmd_port="))
        .and_then(|p| p.parse().ok())
        .expect("the ready line names the EPMD port");

    // The resource from the file is defined; the protocol works through `call`.
    assert!(call(&name, epmd, "{info, session}").contains("inactivity_timeout => 60000"));
    assert_eq!(
        call(
            &name,
            epmd,
            "{create, session, #{id => 1, user => <<\"ann\">>}}"
        ),
        "{ok,#{id => 1,user => <<\"ann\">>}}"
    );
    assert_eq!(
        call(&name, epmd, "{get, session, #{id => 1}}"),
        "{ok,#{id => 1,user => <<\"ann\">>}}"
    );
    let stats = call(&name, epmd, "stats");
    assert!(
        stats.contains("records => 1") && stats.contains("instance_id => <<"),
        "{stats}"
    );

    // `status` summarises it, for people and for scripts.
    let status = |json: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "status",
            "--node",
            &name,
            "--cookie",
            "cli-test",
            "--epmd-port",
        ])
        .arg(epmd.to_string());
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("status runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = status(false);
    assert!(
        text.contains(&name) && text.contains("records   1") && text.contains("session"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&status(true)).expect("status --json");
    assert_eq!(json["records"], 1);
    assert_eq!(json["resources"][0]["name"], "session");
    assert_eq!(json["resources"][0]["records"], 1);
    assert_eq!(json["resources"][0]["inactivity_timeout_ms"], 60000);

    // SIGTERM stops it cleanly.
    stop_ok(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let name = format!("clijson{}@127.0.0.1", std::process::id());
    let mut child = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "start",
            "--name",
            &name,
            "--cookie",
            "c",
        ])
        .args(["--epmd", "embedded", "--epmd-port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the node starts");
    let stderr = child.stderr.take().unwrap();
    let node = Node(child);
    let rx = lines(stderr);
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a log line within 20 s");
        let object: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if object["fields"]["message"] == "node started" {
            break object;
        }
    };
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["fields"]["node"], name.as_str());
    stop_ok(node);
}

/// Starts `start` with `args` and `env`, returns the node and the EPMD port from its ready line.
fn start_with(args: &[&str], env: &[(&str, &str)]) -> (Node, u16) {
    let (node, ready) = start_node(args, env);
    let epmd = field(&ready, "epmd_port=")
        .parse()
        .expect("the ready line names the EPMD port");
    (node, epmd)
}

fn call_with_cookie(node: &str, epmd: u16, cookie: &str) -> bool {
    Command::new(BIN)
        .args(["call", "--node", node, "--cookie", cookie, "--timeout", "5"])
        .args(["--epmd-port", &epmd.to_string(), "ping"])
        .env_remove("ASH_GEN_SERVER_COOKIE")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "pong")
        .unwrap_or(false)
}

#[test]
fn settings_come_from_flags_then_environment_then_file() {
    let dir = std::env::temp_dir().join(format!("ash-cli-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.toml");
    let name = format!("clicfg{}@127.0.0.1", std::process::id());
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\ncookie = \"from-file\"\nepmd = \"embedded\"\nepmd-port = 0\nnet_ticktime = 30\n"
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();

    // Only the file: its cookie.
    let (node, epmd) = start_with(&["--config", config], &[]);
    assert!(call_with_cookie(&name, epmd, "from-file"));
    stop_ok(node);
    // The environment beats the file.
    let (node, epmd) = start_with(
        &["--config", config],
        &[("ASH_GEN_SERVER_COOKIE", "from-env")],
    );
    assert!(call_with_cookie(&name, epmd, "from-env"));
    assert!(!call_with_cookie(&name, epmd, "from-file"));
    stop_ok(node);
    // A flag beats both.
    let (node, epmd) = start_with(
        &["--config", config, "--cookie", "from-flag"],
        &[("ASH_GEN_SERVER_COOKIE", "from-env")],
    );
    assert!(call_with_cookie(&name, epmd, "from-flag"));
    assert!(!call_with_cookie(&name, epmd, "from-env"));
    stop_ok(node);

    // An unknown key is refused, naming it.
    std::fs::write(&file, "nmae = \"x@127.0.0.1\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["start", "--config", config])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown setting \"nmae\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn call_ok(node: &str, epmd: u16, cookie: &str, request: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "call",
            "--node",
            node,
            "--cookie",
            cookie,
            "--timeout",
            "10",
        ])
        .args(["--epmd-port", &epmd.to_string(), request])
        .env_remove("ASH_GEN_SERVER_COOKIE")
        .output()
        .expect("call runs");
    assert!(
        out.status.success(),
        "{request}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_data_dir_keeps_acknowledged_records_through_sigkill() {
    let dir = std::env::temp_dir().join(format!("ash-cli-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let name = format!("clidata{}@127.0.0.1", std::process::id());
    let data = dir.to_str().unwrap().to_string();
    let args = [
        "--name",
        &name,
        "--cookie",
        "d",
        "--epmd",
        "embedded",
        "--epmd-port",
        "0",
        "--data-dir",
        &data,
        "--fsync",
        "always",
    ];
    let (node, epmd) = start_with(&args, &[]);
    let c = |req: &str| call_ok(&name, epmd, "d", req);
    assert_eq!(
        c(
            "{define, user, #{primary_key => [id], types => #{email => ci_string}, identities => [{email, [email], #{where => {eq, active, true}}}], maximum_lifetime => 600000}}"
        ),
        "ok"
    );
    assert_eq!(
        c("{define, short, #{primary_key => [id], maximum_lifetime => 4000}}"),
        "ok"
    );
    for id in 1..=5 {
        c(&format!(
            "{{create, user, #{{id => {id}, email => <<\"U{id}@x\">>, active => true, n => 0}}}}"
        ));
    }
    c("{update, user, #{id => 1}, #{}, #{atomics => [{n, {'+', {ref, n}, {value, 41}}}]}}");
    c("{update, user, #{id => 2}, #{id => 20}}");
    c("{destroy, user, #{id => 3}}");
    c("{update_where, user, #{filter => {eq, id, 4}}, #{set => #{active => false}}}");
    c("{create, {user, <<\"t\">>}, #{id => 1, email => <<\"U1@x\">>, active => true}}");
    c("{create, short, #{id => 1}}");
    // An all-or-nothing bulk create is one journal entry; a refused one journals nothing.
    assert!(
        c("{bulk_create, user, [#{id => 30}, #{id => 31}], #{all_or_nothing => true}}")
            .starts_with("{ok,[{ok,")
    );
    assert_eq!(
        c("{bulk_create, user, [#{id => 32}, #{id => 1}], #{all_or_nothing => true}}"),
        "{error,{record,2,{already_exists,#{id => 1}}}}"
    );
    // A crash: nothing acknowledged may be lost.
    drop(node);
    std::thread::sleep(Duration::from_millis(4500));
    let (node, epmd) = start_with(&args, &[]);
    let c = |req: &str| call_ok(&name, epmd, "d", req);
    assert_eq!(
        c("{get, user, #{id => 1}}"),
        "{ok,#{active => true,email => <<\"U1@x\">>,id => 1,n => 41}}"
    );
    assert_eq!(c("{get, user, #{id => 2}}"), "{error,not_found}");
    assert!(c("{get, user, #{id => 20}}").starts_with("{ok,"));
    assert_eq!(c("{get, user, #{id => 3}}"), "{error,not_found}");
    assert_eq!(c("{get, user, #{id => 30}}"), "{ok,#{id => 30}}");
    assert_eq!(c("{get, user, #{id => 31}}"), "{ok,#{id => 31}}");
    assert_eq!(c("{get, user, #{id => 32}}"), "{error,not_found}");
    assert!(c("{get, user, #{id => 4}}").contains("active => false"));
    assert!(c("{get, {user, <<\"t\">>}, #{id => 1}}").starts_with("{ok,"));
    // The definition came back: identities (case-insensitive, only active records) hold.
    assert!(
        c("{create, user, #{id => 9, email => <<\"u1@X\">>, active => true}}")
            .starts_with("{error,{identity_conflict")
    );
    assert!(
        c("{create, user, #{id => 10, email => <<\"u4@x\">>, active => true}}").starts_with("{ok,")
    );
    // The short-lived record's lifetime ran out while the node was down: it expires now, not
    // 4 s after the restart.
    let mut gone = false;
    for _ in 0..30 {
        if c("{get, short, #{id => 1}}") == "{error,not_found}" {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "the lifetime kept counting while the node was down");
    // A second restart restores the restored state (the journal was rewritten as a snapshot);
    // the restored nodes stop cleanly.
    stop_ok(node);
    let (node, epmd) = start_with(&args, &[]);
    assert!(
        call_ok(&name, epmd, "d", "{get, user, #{id => 1}}").contains("n => 41"),
        "after a second restart"
    );
    stop_ok(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `ash-gen-server args...` with `env`, returning (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("ASH_GEN_SERVER_COOKIE")
        .output()
        .expect("the command runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a node with `args` (and `env`), waits for its ready line; returns it and the line.
fn start_node(args: &[&str], env: &[(&str, &str)]) -> (Node, String) {
    let mut child = Command::new(BIN)
        .arg("start")
        .args(args)
        .env_remove("ASH_GEN_SERVER_COOKIE")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the node starts");
    let stdout = child.stdout.take().unwrap();
    let node = Node(child);
    let rx = lines(stdout);
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a ready line within 20 s");
    assert!(line.starts_with("ready "), "{line}");
    (node, line)
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// SIGTERM, and the exit status must be 0 within 10 s.
fn stop_ok(mut node: Node) {
    assert_eq!(
        common::terminate(&mut node.0, Duration::from_secs(10)),
        0,
        "exit status after SIGTERM"
    );
}

/// What a user gets wrong: each fails with exit status 1 and a message saying what is wrong.
/// And what a user may leave to the node: `--sname`, the cookie file, `--epmd auto`.
#[test]
fn failure_paths_and_defaults() {
    let id = std::process::id();
    let home = std::env::temp_dir().join(format!("ash-cli-home-{id}"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join(".erlang.cookie"), "from-the-cookie-file\n").unwrap();
    let home_s = home.to_str().unwrap().to_string();
    let nohome = format!("{home_s}/nowhere");
    let env = [("HOME", home_s.as_str())];

    // --epmd auto on a port where no EPMD runs: it starts an embedded one; the cookie comes
    // from ~/.erlang.cookie.
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let name = format!("cliauto{id}@127.0.0.1");
    let (node, ready) = start_node(
        &["--name", &name, "--epmd", "auto", "--epmd-port", &free_port],
        &env,
    );
    assert_eq!(field(&ready, "epmd="), "embedded", "{ready}");
    assert_eq!(field(&ready, "epmd_port="), free_port);
    let epmd = free_port.as_str();
    // The cookie file's cookie works, for call too.
    let (code, out, err) = run(
        &["call", "--node", &name, "--epmd-port", epmd, "ping"],
        &env,
    );
    assert_eq!((code, out.trim()), (0, "pong"), "{err}");
    // A second node with --epmd auto finds the first one's EPMD and registers there.
    let sname = format!("clisname{id}");
    let (second, ready2) = start_node(
        &["--sname", &sname, "--epmd", "auto", "--epmd-port", epmd],
        &env,
    );
    assert_eq!(field(&ready2, "epmd="), "external", "{ready2}");
    // --sname: the short host name of this machine.
    let full = field(&ready2, "node=").to_string();
    let (short, host) = full.split_once('@').unwrap();
    assert_eq!(short, sname);
    assert!(!host.is_empty() && !host.contains('.'), "{full}");
    let (code, out, err) = run(
        &["call", "--node", &full, "--epmd-port", epmd, "ping"],
        &env,
    );
    assert_eq!((code, out.trim()), (0, "pong"), "{err}");

    // call: an unreachable node, a wrong cookie, no EPMD, no cookie at all, a bad request.
    let (code, _, err) = run(
        &[
            "call",
            "--node",
            &format!("nobody{id}@127.0.0.1"),
            "--epmd-port",
            epmd,
            "ping",
        ],
        &env,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("nobody{id}@127.0.0.1 is not registered")),
        "{err}"
    );
    let (code, _, err) = run(
        &[
            "call",
            "--node",
            &name,
            "--cookie",
            "wrong",
            "--epmd-port",
            epmd,
            "ping",
        ],
        &env,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("refused the handshake") && err.contains("cookies"),
        "{err}"
    );
    let (code, _, err) = run(&["call", "--node", &name, "--epmd-port", "1", "ping"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("no EPMD at 127.0.0.1:1"), "{err}");
    let (code, _, err) = run(
        &["call", "--node", &name, "--epmd-port", epmd, "ping"],
        &[("HOME", nohome.as_str())],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("no --cookie given") && err.contains(".erlang.cookie"),
        "{err}"
    );
    let (code, _, err) = run(
        &["call", "--node", &name, "--epmd-port", epmd, "{unclosed"],
        &env,
    );
    assert_eq!(code, 1);
    assert!(err.contains("cannot read the request"), "{err}");

    // start: bad resources files, bad limits, no name, no cookie.
    let bad_json = home.join("bad.json");
    std::fs::write(&bad_json, r#"[{"resource": 5}]"#).unwrap();
    let bad_pk = home.join("no_pk.json");
    std::fs::write(&bad_pk, r#"[{"resource": "r"}]"#).unwrap();
    let start_fails = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["start", "--epmd-port", epmd];
        all.extend_from_slice(args);
        let (code, _, err) = run(&all, env);
        assert_eq!(code, 1, "{args:?}: {err}");
        err
    };
    let n3 = format!("clibad{id}@127.0.0.1");
    let err = start_fails(
        &["--name", &n3, "--resources", bad_json.to_str().unwrap()],
        &env,
    );
    assert!(err.contains("bad resources file"), "{err}");
    let err = start_fails(
        &["--name", &n3, "--resources", bad_pk.to_str().unwrap()],
        &env,
    );
    assert!(
        err.contains("bad resources file") || err.contains("primary_key"),
        "{err}"
    );
    let err = start_fails(&["--name", &n3, "--resources", "/nonexistent/r.json"], &env);
    assert!(err.contains("cannot read /nonexistent/r.json"), "{err}");
    let err = start_fails(&["--name", &n3, "--max-term-depth", "100000"], &env);
    assert!(err.contains("--max-term-depth must be between"), "{err}");
    let err = start_fails(&["--name", &n3, "--max-list-length", "0"], &env);
    assert!(err.contains("--max-list-length must be between"), "{err}");
    let err = start_fails(&[], &env);
    assert!(err.contains("--name") && err.contains("--sname"), "{err}");
    let err = start_fails(&["--name", &n3], &[("HOME", nohome.as_str())]);
    assert!(err.contains("no --cookie given"), "{err}");
    // The same name twice: EPMD refuses the second.
    let err = start_fails(&["--name", &name], &env);
    assert!(
        err.to_lowercase().contains("epmd") || err.contains("registered"),
        "{err}"
    );

    stop_ok(second);
    stop_ok(node);
    let _ = std::fs::remove_dir_all(&home);
}

/// `ash-gen-server drain` stops a node as SIGTERM does: it answers, the node exits 0, and the
/// command returns once the node is gone; a second drain finds nobody.
#[test]
fn drain_stops_a_node_as_sigterm_does() {
    let name = format!("clidrain{}@127.0.0.1", std::process::id());
    let args = [
        "--name",
        &name,
        "--cookie",
        "dr",
        "--epmd",
        "embedded",
        "--epmd-port",
        "0",
    ];
    let (mut node, epmd) = start_with(&args, &[]);
    let epmd = epmd.to_string();
    let drain = [
        "drain",
        "--node",
        &name,
        "--cookie",
        "dr",
        "--epmd-port",
        &epmd,
        "--timeout",
        "20",
    ];
    let (code, out, err) = run(&drain, &[]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains(&format!("drained {name}")), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not exit after the drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let (code, _, err) = run(&drain, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
}

/// A cluster member whose Raft core stops on a storage error (here: its snapshot cannot be
/// written, `raft.snapshot.new` being a directory) exits non-zero instead of running on without a
/// cluster role.
#[test]
fn a_member_whose_raft_core_stops_exits_non_zero() {
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("ash-cli-snapfail-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("raft.snapshot.new")).unwrap();
    let name = format!("clisnapfail{id}@127.0.0.1");
    let data_dir = dir.to_string_lossy().into_owned();
    let args = [
        "--name",
        &name,
        "--cookie",
        "sf",
        "--epmd",
        "embedded",
        "--epmd-port",
        "0",
        "--cluster",
        "--data-dir",
        &data_dir,
        "--snapshot-every",
        "5",
    ];
    let (mut node, epmd) = start_with(&args, &[]);
    let epmd = epmd.to_string();
    let call = |request: &str| {
        run(
            &[
                "call",
                "--node",
                &name,
                "--cookie",
                "sf",
                "--epmd-port",
                &epmd,
                "--timeout",
                "5",
                request,
            ],
            &[],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the member did not exit after its snapshot failed"
        );
        // Writes until the first snapshot is due (it fails, and the core stops).
        let _ = call("{define, r, #{primary_key => [id]}}");
        let _ = call(&format!("{{create, r, #{{id => {i}}}}}"));
        i += 1;
    };
    assert_eq!(status.code(), Some(1), "exit status {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--shards`: from the flag, the environment or the file; a member of 4 groups with a data
/// directory keeps every group's records across a restart (group G in DIR/group-G), and refuses
/// to start with another number; out of range is an error.
#[test]
fn shards_from_flag_environment_and_file_and_kept_in_the_data_dir() {
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("ash-cli-shards-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("clishards{id}@127.0.0.1");
    let data_dir = dir.join("data").to_string_lossy().into_owned();
    let base = [
        "--name",
        &name,
        "--cookie",
        "sh",
        "--epmd",
        "embedded",
        "--epmd-port",
        "0",
    ];
    // `ash-gen-server COMMAND --node N --cookie sh --epmd-port E EXTRA...`, which succeeds.
    let tool = |command: &str, epmd: u16, extra: &[&str]| {
        let epmd = epmd.to_string();
        let mut args = vec![
            command,
            "--node",
            &name,
            "--cookie",
            "sh",
            "--epmd-port",
            &epmd,
        ];
        args.extend_from_slice(extra);
        let (status, out, err) = run(&args, &[]);
        assert_eq!(status, 0, "{command} {extra:?}: {err}");
        out
    };
    let call = |epmd: u16, request: &str| tool("call", epmd, &["--timeout", "10", request]);
    let healthy = |epmd: u16, shards: u32| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = call(epmd, "cluster");
            if out.contains(&format!("shards => {shards}")) && out.contains("healthy => true") {
                return out;
            }
            assert!(Instant::now() < deadline, "not healthy: {out}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // The flag, with a data directory.
    let mut args = base.to_vec();
    args.extend(["--shards", "4", "--data-dir", &data_dir]);
    let (node, epmd) = start_with(&args, &[]);
    let info = healthy(epmd, 4);
    assert!(info.contains("groups => ["), "{info}");
    assert!(call(epmd, "{define, r, #{primary_key => [id]}}").contains("ok"));
    for i in 0..40 {
        let out = call(epmd, &format!("{{create, r, #{{id => {i}}}}}"));
        assert!(out.starts_with("{ok,"), "{out}");
    }
    assert!(call(epmd, "{info, r}").contains("count => 40"));
    for g in 1..4 {
        assert!(dir.join("data").join(format!("group-{g}")).is_dir());
    }
    stop_ok(node);
    // Started again with its directory: every group's records.
    let (node, epmd) = start_with(&args, &[]);
    healthy(epmd, 4);
    assert!(call(epmd, "{info, r}").contains("count => 40"));
    assert!(call(epmd, "{get, r, #{id => 39}}").starts_with("{ok,"));
    // `status` sums the groups up: this node holds and leads all four.
    let text = tool("status", epmd, &[]);
    assert!(
        text.contains("groups    4: 4 healthy, 0 moving; this node holds 4, leads 4\n"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&tool("status", epmd, &["--json"])).expect("status --json");
    let groups = json["cluster"]["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 4, "{json}");
    for (g, group) in groups.iter().enumerate() {
        assert_eq!(group["group"], g as i64, "{json}");
        assert_eq!(group["leader"], name.as_str(), "{json}");
        assert_eq!(group["holders"], serde_json::json!([name]), "{json}");
        assert_eq!(group["healthy"], true, "{json}");
    }
    stop_ok(node);
    // With another number: refused.
    let mut other = base.to_vec();
    other.extend(["--shards", "2", "--data-dir", &data_dir]);
    let mut start = vec!["start"];
    start.extend(other);
    let (status, _, err) = run(&start, &[]);
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("differs from the 4 shard(s)"), "{err}");

    // The environment, then the file.
    let (node, epmd) = start_with(&base, &[("ASH_GEN_SERVER_SHARDS", "2")]);
    healthy(epmd, 2);
    stop_ok(node);
    let file = dir.join("node.toml");
    std::fs::write(&file, "shards = 3\n").unwrap();
    let mut args = base.to_vec();
    args.extend(["--config", file.to_str().unwrap()]);
    let (node, epmd) = start_with(&args, &[]);
    healthy(epmd, 3);
    stop_ok(node);

    // Out of range.
    for bad in ["0", "257"] {
        let mut start = vec!["start"];
        start.extend(base);
        start.extend(["--shards", bad]);
        let (status, _, err) = run(&start, &[]);
        assert_ne!(status, 0, "--shards {bad}");
        assert!(err.contains("--shards"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
