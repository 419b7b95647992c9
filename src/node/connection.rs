//! One connection to a peer node: accepting or dialling it, then a reader task and a writer
//! task.
//!
//! The reader decodes frames and hands each message to [`super::dispatch`]. The writer owns the
//! socket's write half: it takes every message queued for the peer, encodes as many as are
//! waiting into one buffer and writes them with one syscall, and sends a tick whenever a quarter
//! of `net_ticktime` passes. A peer silent for a whole `net_ticktime` is disconnected. When
//! either task ends the connection is removed and the peer's monitors and links are cleaned up.

use super::Node;
use super::dispatch;
use crate::wire::frame::{self, Frame, FrameError};
use crate::wire::{epmd, handshake};
use erl_dist::DistributionFlags;
use erl_dist::message::Message;
use erl_dist::node::{NodeName, PeerNode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes gathered into one write.
const MAX_BATCH: usize = 256 * 1024;

/// A live connection to a peer node.
pub struct Conn {
    /// The peer's full name.
    pub peer: String,
    /// Flags both sides support.
    pub flags: DistributionFlags,
    /// Unique among this node's connections.
    pub id: u64,
    tx: mpsc::UnboundedSender<Message>,
    closed: AtomicBool,
    close: Notify,
}

impl Conn {
    /// Queues a message for the peer. Returns false if the connection is gone.
    pub fn send(&self, message: Message) -> bool {
        !self.closed.load(Ordering::Relaxed) && self.tx.send(message).is_ok()
    }

    /// Whether the peer supports `flag`.
    pub fn has(&self, flag: DistributionFlags) -> bool {
        self.flags.contains(flag)
    }

    /// Asks both tasks to stop.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.close.notify_waiters();
        self.close.notify_one();
    }
}

/// Accepts connections until the task is aborted.
pub async fn accept_loop(node: Arc<Node>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let node = node.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let accepted = tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        handshake::accept(stream, node.local_node(), &node.config.cookie, |_| true),
                    )
                    .await
                    .unwrap_or(Err(handshake::HandshakeError::Timeout));
                    match accepted {
                        Ok((stream, peer)) => run(node, stream, peer).await,
                        Err(e) => {
                            tracing::warn!(%addr, error = %e, "refused an incoming connection");
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Dials `peer` through its host's EPMD and runs the connection in the background.
pub async fn connect(node: Arc<Node>, peer: &NodeName) -> Result<(), String> {
    let port = epmd::lookup(peer.host(), node.config.epmd_port, peer.name())
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{peer} is not registered with EPMD on {}", peer.host()))?;
    let stream = TcpStream::connect((peer.host(), port))
        .await
        .map_err(|e| format!("cannot reach {peer} on port {port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (stream, peer_node) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake::connect(stream, node.local_node(), &node.config.cookie),
    )
    .await
    .unwrap_or(Err(handshake::HandshakeError::Timeout))
    .map_err(|e| format!("handshake with {peer} failed: {e}"))?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        run_with(node, stream, peer_node, Some(ready_tx)).await;
    });
    ready_rx
        .await
        .map_err(|_| format!("connection to {peer} closed at once"))
}

async fn run(node: Arc<Node>, stream: TcpStream, peer: PeerNode) {
    run_with(node, stream, peer, None).await
}

async fn run_with(
    node: Arc<Node>,
    stream: TcpStream,
    peer_node: PeerNode,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let flags = node.local_node().flags & peer_node.flags;
    let peer = peer_node.name.to_string();
    let hidden = !peer_node.flags.contains(DistributionFlags::PUBLISHED);
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        peer: peer.clone(),
        flags,
        id: node.next_conn_id(),
        tx,
        closed: AtomicBool::new(false),
        close: Notify::new(),
    });
    let (read_half, write_half) = stream.into_split();
    let last_read = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    node.add_conn(conn.clone());
    tracing::info!(%peer, hidden, "peer connected");
    if let Some(ready) = ready {
        let _ = ready.send(());
    }

    let mut reader = tokio::spawn(read_loop(
        node.clone(),
        conn.clone(),
        read_half,
        last_read.clone(),
        started,
    ));
    let mut writer = tokio::spawn(write_loop(
        write_half,
        rx,
        node.config.net_ticktime,
        last_read,
        started,
    ));
    let reason = tokio::select! {
        r = &mut reader => r.unwrap_or_else(|e| Err(format!("reader failed: {e}"))),
        w = &mut writer => w.unwrap_or_else(|e| Err(format!("writer failed: {e}"))),
        _ = conn.close.notified() => Ok(()),
    };
    conn.closed.store(true, Ordering::Relaxed);
    reader.abort();
    writer.abort();
    match reason {
        Ok(()) => tracing::info!(%peer, "peer disconnected"),
        Err(e) => tracing::warn!(%peer, reason = %e, "peer disconnected"),
    }
    node.remove_conn(&conn);
}

async fn read_loop(
    node: Arc<Node>,
    conn: Arc<Conn>,
    read_half: tokio::net::tcp::OwnedReadHalf,
    last_read: Arc<AtomicU64>,
    started: Instant,
) -> Result<(), String> {
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut buf = Vec::with_capacity(4096);
    loop {
        let frame = frame::read_frame(&mut reader, &mut buf).await;
        last_read.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match frame {
            Ok(Frame::Tick) => {}
            Ok(Frame::Message(message)) => dispatch::dispatch(&node, &conn, *message),
            Ok(Frame::Undecodable(why)) => {
                tracing::warn!(peer = %conn.peer, error = %why, "dropped an undecodable message");
            }
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn write_loop(
    mut write_half: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Message>,
    net_ticktime: Duration,
    last_read: Arc<AtomicU64>,
    started: Instant,
) -> Result<(), String> {
    let mut ticker = tokio::time::interval(net_ticktime / 4);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        tokio::select! {
            biased;
            message = rx.recv() => {
                let Some(message) = message else { return Ok(()) };
                buf.clear();
                push(message, &mut buf);
                while buf.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(message) => push(message, &mut buf),
                        Err(_) => break,
                    }
                }
                write_half.write_all(&buf).await.map_err(|e| format!("write failed: {e}"))?;
            }
            _ = ticker.tick() => {
                let silent_ms = (started.elapsed().as_millis() as u64)
                    .saturating_sub(last_read.load(Ordering::Relaxed));
                if silent_ms > net_ticktime.as_millis() as u64 {
                    return Err(format!("no data from the peer for {silent_ms} ms (net_ticktime)"));
                }
                write_half.write_all(&[0, 0, 0, 0]).await.map_err(|e| format!("tick failed: {e}"))?;
            }
        }
    }
}

fn push(message: Message, buf: &mut Vec<u8>) {
    if let Err(e) = frame::encode(message, buf) {
        tracing::error!(error = %e, "could not encode an outgoing message; dropped it");
    }
}
