//! The `ash-gen-server` command as a user runs it: `start` (with its own EPMD on a free port and
//! a resources file), `call` against it, and a clean stop on SIGTERM.

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
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
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
    let pid = node.0.id();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    assert!(killed.map(|s| s.success()).unwrap_or(false));
    let mut node = node;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
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
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
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
    drop(node);
}
