//! Shared by the integration tests that run the real node binary: start it (embedded EPMD on a
//! free port, distribution port from its `ready` line, stderr collected), a distribution peer
//! written with the crate's own wire code, and stopping the node with a checked exit status.
#![allow(dead_code)]

use ash_gen_server::term::{Atom, Pid, Ref, Value};
use ash_gen_server::wire::dist::{Control, FrameWriter};
use ash_gen_server::wire::frame::{Frame, FrameReader};
use ash_gen_server::wire::handshake;
use erl_dist::DistributionFlags;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The cookie of every node these tests start.
pub const COOKIE: &str = "fuzz-test-cookie";

/// The node binary: `ASH_GEN_SERVER_BIN` if set, else the one cargo built for this test.
pub fn bin() -> String {
    std::env::var("ASH_GEN_SERVER_BIN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ash-gen-server").to_string())
}

/// A running node binary.
pub struct NodeProc {
    pub child: Child,
    pub name: String,
    pub port: u16,
    pub epmd_port: u16,
    /// Every line the node wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl NodeProc {
    /// Starts `ash-gen-server start --name <tag>_<pid>@127.0.0.1` with an embedded EPMD on a free
    /// port, plus `extra` arguments; waits for its `ready` line.
    pub fn start(tag: &str, extra: &[&str], rust_log: &str) -> NodeProc {
        let name = format!("{tag}_{}@127.0.0.1", std::process::id());
        let mut child = Command::new(bin())
            .args([
                "start",
                "--name",
                &name,
                "--cookie",
                COOKIE,
                "--epmd",
                "embedded",
                "--epmd-port",
                "0",
                "--bind",
                "127.0.0.1",
            ])
            .args(extra)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the node binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("a ready line");
        assert!(line.starts_with("ready "), "not ready: {line:?}");
        let field = |key: &str| -> u16 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        let (port, epmd_port) = (field("port="), field("epmd_port="));
        // Keep draining stdout so the node never blocks on it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stdout.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        NodeProc {
            child,
            name,
            port,
            epmd_port,
            log,
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().map(|s| s.is_none()).unwrap_or(false)
    }

    /// Lines of the log containing every pattern.
    pub fn log_lines(&self, patterns: &[&str]) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| patterns.iter().all(|p| l.contains(p)))
            .cloned()
            .collect()
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the exit code. A node that does
    /// not exit within `timeout` is killed and the test fails.
    pub fn stop(mut self, timeout: Duration) -> i32 {
        terminate(&mut self.child, timeout)
    }
}

/// Sends `child` SIGTERM and waits (bounded) for its exit; returns its exit code. A process that
/// does not exit within `timeout` is killed and the test fails, as does one a signal ended.
pub fn terminate(child: &mut Child, timeout: Duration) -> i32 {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status
                .code()
                .unwrap_or_else(|| panic!("killed by a signal: {status:?}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A distribution peer on a real socket: handshake, frames and `gen_server` calls, with the
/// crate's own codec.
pub struct Peer {
    pub stream: TcpStream,
    pub frames: FrameReader,
    pub writer: FrameWriter,
    pub me: Pid,
    pub name: String,
    next_tag: u32,
}

impl Peer {
    /// Connects to `port` as `name` (full node name), offering the atom cache or not.
    pub async fn connect(port: u16, name: &str, atom_cache: bool) -> Result<Peer, String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).ok();
        let creation = rand::random::<u32>().max(4);
        let mut local = handshake::local_node(&name.parse().map_err(|e| format!("{e}"))?, creation);
        if !atom_cache {
            local.flags = DistributionFlags::from_bits_truncate(
                local.flags.bits() & !DistributionFlags::DIST_HDR_ATOM_CACHE.bits(),
            );
        }
        let offered = local.flags;
        let (stream, peer) = tokio::time::timeout(
            Duration::from_secs(10),
            handshake::connect(stream, local, COOKIE),
        )
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let cached = (offered & peer.flags).contains(DistributionFlags::DIST_HDR_ATOM_CACHE);
        let me = Pid {
            node: Atom::new(name).unwrap(),
            id: 1,
            serial: 0,
            creation,
        };
        Ok(Peer {
            stream,
            frames: FrameReader::new(),
            writer: FrameWriter::new(cached),
            me,
            name: name.to_string(),
            next_tag: 1,
        })
    }

    /// A pid of this peer.
    pub fn pid(&self, id: u32) -> Pid {
        Pid { id, ..self.me }
    }

    /// Queues a `gen_server:call` of `{to, node}` (a registered name); returns its tag.
    pub fn queue_call(&mut self, to: &str, request: &Value) -> Value {
        let tag = self.tag();
        let message = Value::tuple(vec![
            Value::Atom(Atom::new("$gen_call").unwrap()),
            Value::pair(Value::Pid(Box::new(self.me)), tag.clone()),
            request.clone(),
        ]);
        let me = self.me;
        self.writer
            .reg_send(&me, Atom::new(to).unwrap(), |w| w.term(&message));
        tag
    }

    /// A fresh call tag.
    pub fn tag(&mut self) -> Value {
        self.next_tag += 1;
        Value::Ref(Box::new(Ref::new(
            self.me.node,
            self.me.creation,
            &[self.next_tag, 7, 9],
        )))
    }

    /// Writes what is queued.
    pub async fn flush(&mut self) -> Result<(), String> {
        let bytes = std::mem::take(&mut self.writer.buf);
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| e.to_string())
    }

    /// Reads frames until the reply tagged `tag` (answering ticks); `Err` when the connection
    /// closes or `timeout` passes.
    pub async fn reply(&mut self, tag: &Value, timeout: Duration) -> Result<Value, String> {
        let wait = async {
            loop {
                while let Some(frame) = self.frames.next_frame().map_err(|e| e.to_string())? {
                    match frame {
                        Frame::Control(c) => {
                            if let Control::Send { message, .. } = *c
                                && let Value::Tuple(items) = message
                                && items.len() == 2
                                && items[0] == *tag
                            {
                                return Ok(items.into_vec().pop().unwrap());
                            }
                        }
                        Frame::Tick => {
                            let _ = self.stream.write_all(&[0, 0, 0, 0]).await;
                        }
                        other => return Err(format!("unexpected frame {other:?}")),
                    }
                }
                match self.stream.read(self.frames.read_space()).await {
                    Ok(0) => return Err("closed".to_string()),
                    Ok(n) => self.frames.filled(n),
                    Err(e) => return Err(format!("closed: {e}")),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| format!("no reply within {timeout:?}"))?
    }

    /// A call: queue, write, wait for the reply.
    pub async fn call(&mut self, request: &Value, timeout: Duration) -> Result<Value, String> {
        let tag = self.queue_call("ash_gen_server", request);
        self.flush().await?;
        self.reply(&tag, timeout).await
    }
}
