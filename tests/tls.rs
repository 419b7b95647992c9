//! TLS distribution in-process: a node started with an option file, driven by the crate's
//! one-shot caller over TLS, with certificates made by `integration/tls_certs.sh` (openssl).
//! Covers how the option file's choices reach rustls: versions, host name checks
//! (`server_name_indication`), `verify_none`, a key inside `certfile`, encrypted keys, a
//! plain caller refused; and the binary taking the TLS settings from a `--config` file and from
//! the environment. The cross-checks against a real `erl -proto_dist inet_tls` are in
//! `integration/erl/ash_tls_SUITE.erl`.

mod common;

use ash_gen_server::client;
use ash_gen_server::node::{EpmdMode, Node, NodeConfig, RunningNode};
use ash_gen_server::protocol::{Options, Server};
use ash_gen_server::term::{Value, parse_term};
use ash_gen_server::wire::tls::{DistTls, OptFile};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const COOKIE: &str = "tls-test-cookie";

/// A test's certificates, in a folder removed at the end.
struct Certs(PathBuf);

impl Certs {
    fn make(tag: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("ash-tls-{tag}-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tls_certs.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{} failed (is openssl installed? scripts/setup.sh installs it): {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Certs(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn cert(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// An option file with these server and client options (Erlang terms).
    fn optfile(&self, name: &str, server: &str, client: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(
            &path,
            format!("[{{server, {server}}}, {{client, {client}}}].\n"),
        )
        .unwrap();
        path
    }

    /// The options of tls_certs.sh's node: its certificate, trusting the test CA.
    fn node_opts(&self, extra: &str) -> String {
        format!(
            r#"[{{certfile, "{}"}}, {{keyfile, "{}"}}, {{cacertfile, "{}"}}, {{verify, verify_peer}}{extra}]"#,
            self.cert("node.pem"),
            self.cert("node.key"),
            self.cert("ca.pem")
        )
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(name: &str, tls: DistTls) -> (RunningNode, u16) {
    let mut config = NodeConfig::new(format!("{name}@127.0.0.1").parse().unwrap(), COOKIE.into());
    config.epmd_port = 0;
    config.epmd_mode = EpmdMode::Embedded;
    config.tls = Some(tls);
    let running = Node::start(config).await.expect("node starts");
    Server::start(&running.node, Options::default()).expect("server starts");
    let epmd = running.node.config.epmd_port;
    (running, epmd)
}

async fn call(
    node: &RunningNode,
    epmd: u16,
    tls: Option<&DistTls>,
    request: &str,
) -> Result<Value, String> {
    client::call(
        &node.node.config.name,
        COOKIE,
        epmd,
        tls,
        "ash_gen_server",
        &parse_term(request).unwrap(),
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| e.to_string())
}

fn t(text: &str) -> Value {
    parse_term(text).unwrap()
}

fn name(tag: &str) -> String {
    format!("tls_{tag}_{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_protocol_over_tls_and_refuses_a_plain_caller() {
    let certs = Certs::make("crud");
    let file = certs.path("ssl_dist.conf");
    let (node, epmd) = start(&name("crud"), DistTls::for_node(&file).unwrap()).await;
    let caller = DistTls::for_caller(&file).unwrap();
    let tls = Some(&caller);
    assert_eq!(call(&node, epmd, tls, "ping").await, Ok(t("pong")));
    call(&node, epmd, tls, "{define, user, #{primary_key => [id]}}")
        .await
        .unwrap();
    // Bigger than a TLS record (16 KiB) both ways.
    let big = "x".repeat(100_000);
    let create = format!("{{create, user, #{{id => 1, big => <<\"{big}\">>}}}}");
    assert!(call(&node, epmd, tls, &create).await.is_ok());
    assert_eq!(
        call(&node, epmd, tls, "{get, user, #{id => 1}}").await,
        Ok(t(&format!("{{ok, #{{id => 1, big => <<\"{big}\">>}}}}")))
    );
    let plain = call(&node, epmd, None, "ping").await;
    assert!(plain.is_err(), "a plain caller got through: {plain:?}");
    assert_eq!(call(&node, epmd, tls, "ping").await, Ok(t("pong")));
    node.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_names_and_verify_none_reach_rustls() {
    let certs = Certs::make("names");
    // TLS 1.3 only on both sides.
    let v13 = certs.optfile(
        "v13.conf",
        &certs.node_opts(", {versions, ['tlsv1.3']}"),
        &certs.node_opts(", {versions, ['tlsv1.3']}"),
    );
    let (node, epmd) = start(&name("v13"), DistTls::for_node(&v13).unwrap()).await;
    let caller = DistTls::for_caller(&v13).unwrap();
    assert_eq!(
        call(&node, epmd, Some(&caller), "ping").await,
        Ok(t("pong"))
    );
    // A TLS 1.2-only caller cannot talk to it.
    let v12 = certs.optfile(
        "v12.conf",
        &certs.node_opts(""),
        &certs.node_opts(", {versions, ['tlsv1.2']}"),
    );
    let old = DistTls::for_caller(&v12).unwrap();
    assert!(call(&node, epmd, Some(&old), "ping").await.is_err());

    // The node's certificate is for 127.0.0.1: another name fails, unless the check is off.
    let wrong = certs.optfile(
        "wrong_name.conf",
        &certs.node_opts(""),
        &certs.node_opts(r#", {versions, ['tlsv1.3']}, {server_name_indication, "db1.example"}"#),
    );
    let e = call(
        &node,
        epmd,
        Some(&DistTls::for_caller(&wrong).unwrap()),
        "ping",
    )
    .await
    .unwrap_err();
    assert!(e.contains("not valid for name \"db1.example\""), "{e}");
    let off = certs.optfile(
        "no_name.conf",
        &certs.node_opts(""),
        &certs.node_opts(", {versions, ['tlsv1.3']}, {server_name_indication, disable}"),
    );
    let off = DistTls::for_caller(&off).unwrap();
    assert_eq!(call(&node, epmd, Some(&off), "ping").await, Ok(t("pong")));

    // verify_none accepts a server certificate from a CA nobody trusts...
    let rogue = certs.optfile(
        "rogue_server.conf",
        &format!(
            r#"[{{certfile, "{}"}}, {{keyfile, "{}"}}, {{versions, ['tlsv1.3']}}]"#,
            certs.cert("rogue.pem"),
            certs.cert("rogue.key")
        ),
        "[]",
    );
    let (rogue_node, rogue_epmd) = start(&name("rogue"), DistTls::for_node(&rogue).unwrap()).await;
    let trusting = certs.optfile(
        "trusting.conf",
        "[]",
        "[{verify, verify_none}, {versions, ['tlsv1.3']}]",
    );
    let trusting = DistTls::for_caller(&trusting).unwrap();
    assert_eq!(
        call(&rogue_node, rogue_epmd, Some(&trusting), "ping").await,
        Ok(t("pong"))
    );
    // ...which verify_peer refuses, naming why.
    let e = call(&rogue_node, rogue_epmd, Some(&off), "ping")
        .await
        .unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    rogue_node.shutdown(std::time::Duration::from_secs(5)).await;
    node.shutdown(std::time::Duration::from_secs(5)).await;
}

#[test]
fn key_files_are_read_as_otp_reads_them() {
    let certs = Certs::make("keys");
    // The key may sit in certfile (OTP's documented example).
    let both = certs.path("node_and_key.pem");
    let mut pem = std::fs::read(certs.cert("node.pem")).unwrap();
    pem.extend(std::fs::read(certs.cert("node.key")).unwrap());
    std::fs::write(&both, pem).unwrap();
    let f = certs.optfile(
        "combined.conf",
        &format!(r#"[{{certfile, "{}"}}]"#, both.display()),
        "[]",
    );
    let tls = DistTls::for_node(&f).unwrap();
    // No verify and no cacertfile on the client: verify_none, with a warning.
    assert!(
        tls.notes()
            .iter()
            .any(|n| n.option == "verify" && n.warn && n.text.contains("not verified"))
    );

    // A certfile without a key and no keyfile: said plainly.
    let f = certs.optfile(
        "nokey.conf",
        &format!(r#"[{{certfile, "{}"}}]"#, certs.cert("node.pem")),
        "[]",
    );
    let e = DistTls::for_node(&f).unwrap_err().to_string();
    assert!(e.contains("holds no private key: add keyfile"), "{e}");

    // An encrypted key: rustls cannot decrypt it, and the error says what to do.
    let encrypted = certs.path("node_encrypted.key");
    let status = Command::new("openssl")
        .args(["pkey", "-aes256", "-passout", "pass:secret", "-in"])
        .arg(certs.cert("node.key"))
        .arg("-out")
        .arg(&encrypted)
        .status()
        .unwrap();
    assert!(status.success());
    let f = certs.optfile(
        "encrypted.conf",
        &format!(
            r#"[{{certfile, "{}"}}, {{keyfile, "{}"}}, {{password, "secret"}}]"#,
            certs.cert("node.pem"),
            encrypted.display()
        ),
        "[]",
    );
    let e = DistTls::for_node(&f).unwrap_err().to_string();
    assert!(
        e.contains("server option keyfile") && e.contains("encrypted private key"),
        "{e}"
    );

    // verify_peer without a CA to trust, a missing file, no server section.
    let f = certs.optfile(
        "noca2.conf",
        &format!(
            r#"[{{certfile, "{}"}}, {{keyfile, "{}"}}, {{verify, verify_peer}}]"#,
            certs.cert("node.pem"),
            certs.cert("node.key")
        ),
        "[]",
    );
    let e = DistTls::for_node(&f).unwrap_err().to_string();
    assert!(e.contains("verify_peer needs the CAs to trust"), "{e}");
    let f = certs.optfile("missing.conf", r#"[{certfile, "/nonexistent.pem"}]"#, "[]");
    let e = DistTls::for_node(&f).unwrap_err().to_string();
    assert!(
        e.starts_with("server option certfile /nonexistent.pem:"),
        "{e}"
    );
    let path = certs.path("client_only.conf");
    std::fs::write(&path, "[{client, [{verify, verify_none}]}].").unwrap();
    let e = DistTls::for_node(&path).unwrap_err().to_string();
    assert!(e.contains("no {server, [...]} section"), "{e}");
    assert!(DistTls::for_caller(&path).is_ok());
    // A server name to check that cannot be one: said at start, not at the first connection.
    let f = certs.optfile(
        "bad_sni.conf",
        "[]",
        r#"[{server_name_indication, "no such/host"}]"#,
    );
    let e = DistTls::for_caller(&f).unwrap_err().to_string();
    assert!(e.contains("is not a host name"), "{e}");
    // The option file itself is checked by OptFile (unit tests in the crate).
    assert!(OptFile::read(&path).is_ok());
}

/// The binary as an operator runs it: TLS from a `--config` file for `start`, from the
/// environment for `call`; the ready line says which distribution runs.
#[test]
fn the_command_takes_tls_from_a_config_file_and_the_environment() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    const BIN: &str = env!("CARGO_BIN_EXE_ash-gen-server");
    let certs = Certs::make("cli");
    let optfile = certs.cert("ssl_dist.conf");
    let config = certs.path("node.toml");
    std::fs::write(
        &config,
        format!("proto_dist = \"inet_tls\"\nssl_dist_optfile = \"{optfile}\"\n"),
    )
    .unwrap();
    let name = format!("{}@127.0.0.1", name("cli"));
    let mut child = Command::new(BIN)
        .args([
            "start", "--name", &name, "--cookie", COOKIE, "--epmd", "embedded",
        ])
        .args(["--epmd-port", "0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the node starts");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let node = Kill(child);
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("ready "))
        .expect("a ready line");
    assert!(ready.contains("proto_dist=inet_tls"), "{ready}");
    let epmd = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("epmd_port="))
        .expect("the EPMD port");
    let call = |env: &[(&str, &str)]| {
        Command::new(BIN)
            .args([
                "call",
                "--node",
                &name,
                "--cookie",
                COOKIE,
                "--epmd-port",
                epmd,
            ])
            .arg("ping")
            .envs(env.iter().copied())
            .output()
            .expect("call runs")
    };
    let out = call(&[
        ("ASH_GEN_SERVER_PROTO_DIST", "inet_tls"),
        ("ASH_GEN_SERVER_SSL_DIST_OPTFILE", &optfile),
    ]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "pong",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without TLS the node's TLS refuses the caller.
    assert!(!call(&[]).status.success());
    let mut node = node;
    assert_eq!(
        common::terminate(&mut node.0, Duration::from_secs(10)),
        0,
        "exit status after SIGTERM"
    );
}
