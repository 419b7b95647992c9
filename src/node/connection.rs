//! One connection to a peer node: accepting or dialling it, then a reader task and a writer
//! task sharing the socket.
//!
//! Outgoing messages are encoded straight into the connection's outbox. The reader cuts frames
//! out of what it reads and hands each message to [`super::dispatch`]; replies produced while it
//! dispatches are written by the reader itself, with one non-blocking write once it has read
//! everything the peer sent (or every 64 frames, `FLUSH_AFTER`, while more keep coming), so a
//! request costs no hop to another task and a burst of requests one write. Messages sent from
//! elsewhere (timers, other connections) wake the writer task, which also takes over whatever
//! the socket would not accept at once, and sends a tick every quarter of `net_ticktime`. A
//! message someone waits on (a call this node makes, a Raft message) is written at once by the
//! task that makes it, unless the peer is busy (its frames come in back to back): then the
//! writer task, woken, lets the other tasks woken by the same batch queue theirs first and
//! writes them all at once.
//! Before it sleeps, the reader may busy-poll the socket for `--busy-poll-us`, only while a lone
//! caller sends one request at a time (`Spin` says when). A peer silent for a whole
//! `net_ticktime` is disconnected. When either task ends the connection is removed and the
//! peer's monitors and links are cleaned up.
//!
//! With TLS distribution ([`crate::wire::tls`]) the TLS handshake comes first, right after the
//! TCP connect, and the connection keeps the same shape: the reader decrypts what it reads
//! (still without waiting, still busy-polling), and writes go through the connection's rustls
//! state with the same non-blocking write per batch. The plain TCP path does not change: it
//! only tests once per batch whether the connection has TLS.
//!
//! At shutdown ([`super::RunningNode::shutdown`]) the node drains its connections in two
//! phases: first every reader reads and serves what the peer has already sent (the bytes that
//! arrived before the shutdown reached it) and then stops reading; once every reader has, so
//! that every call those messages made has been answered (whichever connection's reader ran the
//! record's turn), every writer writes out what is queued and the socket is shut down for
//! writing. The connection then reads and throws away whatever the peer still sends until the
//! peer closes its side (a BEAM peer does on our FIN) or sends nothing for a second, and only
//! then closes: a socket closed with bytes unread, or hit by bytes after its close, resets the
//! connection, and a reset can make the peer lose replies it has received but not yet read.

use super::Node;
use super::dispatch;
use crate::wire::dist::FrameWriter;
use crate::wire::frame::{Frame, FrameError, FrameReader, release_if_large};
use crate::wire::tls::TlsChannel;
use crate::wire::tls::channel::{ChannelError, Fed};
use crate::wire::{epmd, handshake};
use erl_dist::DistributionFlags;
use erl_dist::node::{NodeName, PeerNode};
use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A live connection to a peer node.
pub struct Conn {
    /// The peer's full name.
    pub peer: String,
    /// Flags both sides support.
    pub flags: DistributionFlags,
    /// Unique among this node's connections.
    pub id: u64,
    stream: Arc<TcpStream>,
    /// The TLS state, on a TLS distribution connection.
    tls: Option<TlsChannel>,
    out: Mutex<Outbox>,
    wake: Notify,
    closed: AtomicBool,
    close: Notify,
    /// The reader has stopped (the peer closed, or the node is shutting down).
    read_done: AtomicBool,
    /// Frames come in back to back: the reader's last read brought several, or came before
    /// the socket was ever empty since the one before. The peer has several messages in
    /// flight, so [`Conn::write_now`] leaves its frames to the writer task, which lets the
    /// other tasks woken by the same batch queue theirs first: one write for all of them.
    busy_peer: AtomicBool,
    /// [`Conn::write_now`] left frames to the writer task because the peer was busy: the
    /// writer yields once before writing them (other writes wake it as before).
    burst: AtomicBool,
}

/// Encoded frames waiting to be written.
struct Outbox {
    frames: FrameWriter,
    /// The writer task holds bytes it is writing: nobody else may write now.
    busy: bool,
    /// The writer task was already woken for what is queued.
    woken: bool,
}

thread_local! {
    /// The connection whose reader is dispatching on this thread: its own replies are flushed
    /// by the reader at the end of the batch instead of waking the writer task.
    static READING: Cell<u64> = const { Cell::new(0) };
}

impl Conn {
    /// Queues frames for the peer: `write` appends them with the connection's
    /// [`FrameWriter`]. Returns false if the connection is gone.
    pub fn write(&self, write: impl FnOnce(&mut FrameWriter)) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let mut out = self.out.lock();
        write(&mut out.frames);
        if READING.with(Cell::get) != self.id && !out.busy && !out.woken {
            out.woken = true;
            drop(out);
            self.wake.notify_one();
        }
        true
    }

    /// [`Self::write`], then writes to the socket from the calling task instead of waking the
    /// writer task (unless the caller is this connection's reader, which flushes at the end
    /// of its batch, or the writer is busy writing, which takes these frames too): one hop
    /// less for a message someone is waiting on, such as a Raft message between members and
    /// its answer. What the socket does not take at once still goes to the writer task.
    ///
    /// While the peer is busy (many calls in flight on this connection, their replies coming
    /// back in batches), this is [`Self::write`]: the callers woken by one batch of replies
    /// then send their next requests in one write, as a BEAM node's distribution port does,
    /// instead of a write (and a wake-up of the peer) each.
    pub fn write_now(&self, write: impl FnOnce(&mut FrameWriter)) -> bool {
        if self.busy_peer.load(Ordering::Relaxed) {
            self.burst.store(true, Ordering::Relaxed);
            return self.write(write);
        }
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        write(&mut self.out.lock().frames);
        if READING.with(Cell::get) != self.id {
            self.flush_now();
        }
        true
    }

    /// Writes what is queued without waiting; whatever the socket does not take now goes to
    /// the writer task.
    fn flush_now(&self) {
        if let Some(tls) = &self.tls {
            return self.flush_tls_now(tls);
        }
        let mut out = self.out.lock();
        if out.busy || out.frames.buf.is_empty() {
            return;
        }
        let mut written = 0;
        while written < out.frames.buf.len() {
            match self.stream.try_write(&out.frames.buf[written..]) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        out.frames.buf.drain(..written);
        release_if_large(&mut out.frames.buf);
        if !out.frames.buf.is_empty() && !out.woken {
            out.woken = true;
            drop(out);
            self.wake.notify_one();
        }
    }

    /// [`Self::flush_now`] through TLS: what the socket does not take stays in rustls, in
    /// order, for the writer task.
    fn flush_tls_now(&self, tls: &TlsChannel) {
        let mut out = self.out.lock();
        if out.frames.buf.is_empty() && !tls.wants_write() {
            return;
        }
        let done = tls.push(&out.frames.buf, &self.stream);
        out.frames.buf.clear();
        release_if_large(&mut out.frames.buf);
        if !matches!(done, Ok(true)) && !out.woken {
            out.woken = true;
            drop(out);
            self.wake.notify_one();
        }
    }

    /// Notes how the last frames came in: `several` when they were not a lone request
    /// ([`lone`]: the read brought more than one, or came before the socket was empty since
    /// the last; see `busy_peer`).
    fn note_batch(&self, several: bool) {
        if self.busy_peer.load(Ordering::Relaxed) != several {
            self.busy_peer.store(several, Ordering::Relaxed);
        }
    }

    /// Whether the peer supports `flag`.
    pub fn has(&self, flag: DistributionFlags) -> bool {
        self.flags.contains(flag)
    }

    /// Whether the reader has stopped reading.
    pub fn read_done(&self) -> bool {
        self.read_done.load(Ordering::Acquire)
    }

    /// Whether everything queued for the peer has been handed to the socket.
    fn flushed(&self) -> bool {
        let out = self.out.lock();
        !out.busy && out.frames.buf.is_empty()
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
                    let accepted =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_handshakes(&node, stream))
                            .await
                            .unwrap_or_else(
                                |_| Err(handshake::HandshakeError::Timeout.to_string()),
                            );
                    match accepted {
                        Ok((stream, tls, peer)) => run_with(node, stream, tls, peer, None).await,
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

/// The first byte of a TLS handshake record: a TLS client dialling a plain TCP node.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The accepting side's handshakes: TLS first when the node runs TLS distribution, then the
/// distribution handshake. The error says which failed and why.
async fn accept_handshakes(
    node: &Arc<Node>,
    stream: TcpStream,
) -> Result<(TcpStream, Option<TlsChannel>, PeerNode), String> {
    let local = node.local_node();
    let cookie = &node.config.cookie;
    match &node.config.tls {
        None => {
            // A distribution handshake starts with a 2-byte length, never 0x16: say so plainly
            // instead of waiting for a name that never comes.
            let mut first = [0u8; 1];
            if matches!(stream.peek(&mut first).await, Ok(1)) && first[0] == TLS_HANDSHAKE_RECORD {
                return Err(
                    "a TLS client (inet_tls_dist) dialled this plain TCP node: start \
                            the node with --proto-dist inet_tls to accept it"
                        .into(),
                );
            }
            let (stream, peer) = handshake::accept(stream, local, cookie, not_isolated(node))
                .await
                .map_err(|e| e.to_string())?;
            Ok((stream, None, peer))
        }
        Some(tls) => {
            let stream = tls.accept(stream).await.map_err(|e| e.to_string())?;
            let (stream, peer) = handshake::accept(
                handshake::Packet4::new(stream),
                local,
                cookie,
                not_isolated(node),
            )
            .await
            .map_err(|e| format!("inside TLS: {e}"))?;
            let (stream, channel) = TlsChannel::from_server(stream.into_inner());
            Ok((stream, Some(channel), peer))
        }
    }
}

/// Whether the accepting side goes on with a peer of this name: not when this node is cut off
/// from it ([`Node::isolate`]).
fn not_isolated(node: &Arc<Node>) -> impl FnOnce(&NodeName) -> bool + '_ {
    |name| !node.is_isolated_from(&name.to_string())
}

/// The dialling side's handshakes with `peer`, TLS first when configured.
async fn connect_handshakes(
    node: &Arc<Node>,
    stream: TcpStream,
    peer: &NodeName,
) -> Result<(TcpStream, Option<TlsChannel>, PeerNode), ConnectError> {
    let local = node.local_node();
    let cookie = &node.config.cookie;
    let failed = |source| ConnectError::Handshake {
        peer: peer.to_string(),
        source,
    };
    match &node.config.tls {
        None => {
            let (stream, peer_node) = handshake::connect(stream, local, cookie)
                .await
                .map_err(|e| failed(e.hint_plain()))?;
            Ok((stream, None, peer_node))
        }
        Some(tls) => {
            let stream =
                tls.connect(stream, peer.host())
                    .await
                    .map_err(|source| ConnectError::Tls {
                        peer: peer.to_string(),
                        source,
                    })?;
            let (stream, peer_node) =
                handshake::connect(handshake::Packet4::new(stream), local, cookie)
                    .await
                    .map_err(failed)?;
            let (stream, channel) = TlsChannel::from_client(stream.into_inner());
            Ok((stream, Some(channel), peer_node))
        }
    }
}

/// Why a connection to a peer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The peer could not be found or reached.
    #[error(transparent)]
    Dial(#[from] epmd::DialError),
    /// The TLS handshake failed (TLS distribution): an untrusted certificate among other
    /// reasons.
    #[error("handshake with {peer} failed: {source}")]
    Tls {
        /// The peer.
        peer: String,
        /// Why.
        source: crate::wire::tls::TlsHandshakeError,
    },
    /// The handshake failed (a wrong cookie among other reasons).
    #[error("handshake with {peer} failed: {source}")]
    Handshake {
        /// The peer.
        peer: String,
        /// Why.
        source: handshake::HandshakeError,
    },
    /// The connection ended as soon as it was made.
    #[error("connection to {0} closed at once")]
    ClosedAtOnce(String),
    /// This node is cut off from the peer ([`super::Node::isolate`]).
    #[error("isolated from {0} (fault injection)")]
    Isolated(String),
}

/// Why a connection ended in error: the `reason` logged with "peer disconnected".
#[derive(Debug, thiserror::Error)]
enum Disconnect {
    /// The reader task failed.
    #[error("reader failed: {0}")]
    Reader(tokio::task::JoinError),
    /// The writer task failed.
    #[error("writer failed: {0}")]
    Writer(tokio::task::JoinError),
    /// Reading the socket failed.
    #[error("read failed: {0}")]
    Read(std::io::Error),
    /// Writing the socket failed.
    #[error("write failed: {0}")]
    Write(std::io::Error),
    /// A TLS reader was started on a connection without TLS.
    #[error("not a TLS connection")]
    NotTls,
    /// The TLS session failed (rustls queued an alert saying why).
    #[error(transparent)]
    Tls(ChannelError),
    /// The peer sent what is not a distribution message: it is broken (as the BEAM has it).
    #[error("undecodable message: {0}")]
    Undecodable(String),
    /// The stream of frames broke (closed by the peer among other reasons).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Nothing came from the peer for longer than `net_ticktime` (milliseconds silent).
    #[error("no data from the peer for {0} ms (net_ticktime)")]
    Silent(u64),
}

/// Dials `peer` through its host's EPMD and runs the connection in the background.
pub async fn connect(node: Arc<Node>, peer: &NodeName) -> Result<(), ConnectError> {
    let name = peer.to_string();
    if node.is_isolated_from(&name) {
        return Err(ConnectError::Isolated(name));
    }
    let stream = epmd::dial(peer, node.config.epmd_port).await?;
    let (stream, tls, peer_node) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connect_handshakes(&node, stream, peer))
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::Handshake {
                    peer: peer.to_string(),
                    source: handshake::HandshakeError::Timeout,
                })
            })?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        run_with(node, stream, tls, peer_node, Some(ready_tx)).await;
    });
    ready_rx
        .await
        .map_err(|_| ConnectError::ClosedAtOnce(peer.to_string()))
}

async fn run_with(
    node: Arc<Node>,
    stream: TcpStream,
    tls: Option<TlsChannel>,
    peer_node: PeerNode,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let flags = node.local_node().flags & peer_node.flags;
    let peer = peer_node.name.to_string();
    let hidden = !peer_node.flags.contains(DistributionFlags::PUBLISHED);
    let conn = Arc::new(Conn {
        peer: peer.clone(),
        flags,
        id: node.next_conn_id(),
        stream: Arc::new(stream),
        tls,
        out: Mutex::new(Outbox {
            frames: FrameWriter::new(flags.contains(DistributionFlags::DIST_HDR_ATOM_CACHE)),
            busy: false,
            woken: false,
        }),
        wake: Notify::new(),
        closed: AtomicBool::new(false),
        close: Notify::new(),
        read_done: AtomicBool::new(false),
        busy_peer: AtomicBool::new(false),
        burst: AtomicBool::new(false),
    });
    let last_read = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    node.add_conn(conn.clone());
    match &conn.tls {
        None => tracing::info!(%peer, hidden, "peer connected"),
        Some(tls) => tracing::info!(%peer, hidden, tls = %tls.description, "peer connected"),
    }
    if let Some(ready) = ready {
        let _ = ready.send(());
    }

    let mut reader = if conn.tls.is_some() {
        tokio::spawn(read_loop_tls(
            node.clone(),
            conn.clone(),
            last_read.clone(),
            started,
        ))
    } else {
        tokio::spawn(read_loop(
            node.clone(),
            conn.clone(),
            last_read.clone(),
            started,
        ))
    };
    let mut writer = tokio::spawn(write_loop(
        conn.clone(),
        node.config.net_ticktime,
        last_read,
        started,
    ));
    let reason = tokio::select! {
        r = &mut reader => r.unwrap_or_else(|e| Err(Disconnect::Reader(e))),
        w = &mut writer => w
            .unwrap_or_else(|e| Err(Disconnect::Writer(e)))
            .map(|()| Read::Closed),
        _ = conn.close.notified() => Ok(Read::Closed),
    };
    conn.read_done.store(true, Ordering::Release);
    let reason = match reason {
        Ok(Read::Drained) => {
            // Shutting down: once every reader is done, write out what is queued, then close.
            let mut phase = node.phase();
            let flushed = async {
                let _ = phase.wait_for(|p| *p >= super::Phase::Flush).await;
                while !conn.flushed() {
                    conn.wake.notify_one();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            };
            tokio::select! {
                _ = flushed => {}
                w = &mut writer => { let _ = w; }
                _ = conn.close.notified() => {}
            }
            let _ = socket2::SockRef::from(&*conn.stream).shutdown(std::net::Shutdown::Write);
            // The peer may still be sending (calls it made before it read our replies): close
            // the socket only once it has closed its side, or gone quiet. Closed with bytes
            // unread, or hit by bytes after the close, the socket would answer with a reset,
            // and a reset makes the peer drop the replies it has received but not yet read.
            if !conn.closed.load(Ordering::Relaxed) {
                conn.closed.store(true, Ordering::Relaxed);
                writer.abort();
                tokio::select! {
                    _ = linger(&conn.stream) => {}
                    _ = conn.close.notified() => {}
                }
            }
            Ok(Some("node shutting down"))
        }
        Ok(Read::Closed) => Ok(None),
        Err(e) => Err(e),
    };
    conn.closed.store(true, Ordering::Relaxed);
    reader.abort();
    writer.abort();
    if let Some(tls) = &conn.tls {
        tls.close(&conn.stream);
    }
    match reason {
        Ok(None) => tracing::info!(%peer, "peer disconnected"),
        Ok(Some(why)) => tracing::info!(%peer, reason = %why, "peer disconnected"),
        Err(e) => tracing::warn!(%peer, reason = %e, "peer disconnected"),
    }
    node.remove_conn(&conn);
}

/// How long a connection closing at shutdown waits for more bytes from a peer that has not
/// closed its side ([`linger`]).
const LINGER_QUIET: Duration = Duration::from_secs(1);

/// At shutdown, after the last reply and our FIN: reads and discards what the peer still sends
/// until it closes its side (as a BEAM peer does on the FIN) or sends nothing for
/// [`LINGER_QUIET`], so that the socket is closed with nothing unread and nothing more coming,
/// without a reset. The node's shutdown timeout bounds it too ([`Conn::close`]).
async fn linger(stream: &TcpStream) {
    let mut discard = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(LINGER_QUIET, stream.readable()).await {
            Ok(Ok(())) => match stream.try_read(&mut discard) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            },
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// Restores the reader marker even if dispatch panics.
struct ReadingGuard;

impl ReadingGuard {
    fn enter(id: u64) -> ReadingGuard {
        READING.with(|r| r.set(id));
        ReadingGuard
    }
}

impl Drop for ReadingGuard {
    fn drop(&mut self) {
        READING.with(|r| r.set(0));
    }
}

/// How a reader ended without error.
enum Read {
    /// The peer closed the connection.
    Closed,
    /// The node is shutting down: what the peer had sent was read and served.
    Drained,
}

async fn read_loop(
    node: Arc<Node>,
    conn: Arc<Conn>,
    last_read: Arc<AtomicU64>,
    started: Instant,
) -> Result<Read, Disconnect> {
    let mut frames = FrameReader::with_limits(node.config.limits);
    let mut spin = Spin::new(node.config.busy_poll);
    let mut phase = node.phase();
    // Frames served since the reader last found the socket empty: one request at a time is
    // a lone caller waiting on each reply (worth polling for), many are a batch.
    let mut served = 0;
    // Frames served whose replies are not written yet (see below).
    let mut unflushed = 0;
    loop {
        if *phase.borrow() >= super::Phase::Drain {
            conn.flush_now();
            return drain_rest(&node, &conn, &mut frames);
        }
        match conn.stream.try_read(frames.read_space()) {
            Ok(0) => {
                conn.flush_now();
                return Ok(Read::Closed);
            }
            Ok(n) => frames.filled(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if unflushed > 0 {
                    conn.flush_now();
                    unflushed = 0;
                }
                // Like a BEAM scheduler, keep polling a moment before sleeping: a busy peer's
                // next request usually arrives within microseconds, and waking a sleeping
                // thread (on a virtual machine, across CPUs) costs tens of them.
                let budget = spin.budget(served);
                served = 0;
                if !budget.is_zero() {
                    match spin_for(&conn.stream, frames.read_space(), budget) {
                        Ok(0) => return Ok(Read::Closed),
                        Ok(n) => {
                            spin.caught();
                            frames.filled(n);
                            last_read
                                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                            served += serve(&node, &conn, &mut frames, served)?;
                            continue;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => spin.missed(),
                        Err(e) => return Err(Disconnect::Read(e)),
                    }
                }
                let slept = Instant::now();
                tokio::select! {
                    r = conn.stream.readable() => r.map_err(Disconnect::Read)?,
                    _ = phase.wait_for(|p| *p >= super::Phase::Drain) => {}
                }
                spin.woke_after(slept.elapsed());
                continue;
            }
            Err(e) => return Err(Disconnect::Read(e)),
        }
        last_read.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let n = {
            let _reading = ReadingGuard::enter(conn.id);
            match drain(&node, &conn, &mut frames) {
                Ok(n) => n,
                Err(e) => {
                    // A broken frame ends the connection; the replies to the good requests
                    // before it (held back for coalescing) go out first.
                    conn.flush_now();
                    return Err(e);
                }
            }
        };
        // Coalesce: while the peer keeps sending, the replies of what was read wait for the
        // socket to be empty (one write for all of them, instead of one per read), up to
        // `FLUSH_AFTER` frames. A lone request (all that came since the socket was empty) is
        // answered at once: its caller is waiting to send the next one.
        let lone = lone(served, n);
        if n > 0 {
            conn.note_batch(!lone);
        }
        unflushed += n;
        if unflushed >= FLUSH_AFTER || lone {
            conn.flush_now();
            unflushed = 0;
        }
        served += n;
    }
}

/// The most frames a reader serves before it writes their replies, while more keep coming.
const FLUSH_AFTER: usize = 64;

/// Dispatches every whole frame buffered, then writes the replies with one non-blocking
/// write. Returns the number of frames served; `before` were served since the socket was last
/// found empty.
fn serve(
    node: &Arc<Node>,
    conn: &Arc<Conn>,
    frames: &mut FrameReader,
    before: usize,
) -> Result<usize, Disconnect> {
    let served = {
        let _reading = ReadingGuard::enter(conn.id);
        drain(node, conn, frames)?
    };
    if served > 0 {
        conn.note_batch(!lone(before, served));
    }
    conn.flush_now();
    Ok(served)
}

/// Whether `n` frames read after `before` since the socket was last found empty are a lone
/// request: all that came is one frame, its caller waiting on the reply to send the next.
fn lone(before: usize, n: usize) -> bool {
    before == 0 && n <= 1
}

/// When a connection's reader busy-polls (`--busy-poll-us`), adapted to what polling buys.
///
/// Polling pays when one request at a time comes in, each sent as soon as the previous reply
/// arrived: the next one is microseconds away and a sleeping thread takes tens to wake. It
/// does not pay when many callers share the connection: sleeping, the reader wakes to a batch
/// of requests (one wake-up and one write for all of them), while polling catches them one by
/// one (a read and a write each) and keeps a CPU the peer needs to send the next ones. Nor
/// does it pay when the peer takes longer than the budget to send its next request.
///
/// So the reader sleeps by default, and learns from how it wakes: after `need` wake-ups in a
/// row (at first [`SPIN_AFTER_LONE`]) each to a single frame within twice the budget (a lone
/// caller; the sleep includes the wake-up), it polls after each request. It stops when a batch of several frames comes
/// in, and when a poll finds nothing, which also doubles `need` (up to [`SPIN_NEED_MAX`]; a
/// poll that finds data resets it). Every [`SPIN_PROBE_EVERY`] requests it sleeps once to
/// look at what wakes it again. An idle node never polls: a poll follows a request, for at
/// most the budget.
struct Spin {
    full: Duration,
    polling: bool,
    /// Wake-ups in a row to a lone request.
    lone: u32,
    /// Wake-ups to a lone request in a row needed to start polling.
    need: u32,
    /// Polls until the next probing sleep.
    probe_in: u32,
    /// How long the reader last slept, until the batch that woke it is served.
    slept: Option<Duration>,
}

/// Wake-ups to a lone request in a row before the reader polls, at first.
const SPIN_AFTER_LONE: u32 = 16;
/// The most wake-ups to a lone request in a row ever needed (after polls that found nothing).
const SPIN_NEED_MAX: u32 = 1024;
/// While polling, one request in this many is followed by a sleep instead.
const SPIN_PROBE_EVERY: u32 = 256;

impl Spin {
    fn new(full: Duration) -> Spin {
        Spin {
            full,
            polling: false,
            lone: 0,
            need: SPIN_AFTER_LONE,
            probe_in: SPIN_PROBE_EVERY,
            slept: None,
        }
    }

    /// How long to poll now that the socket is empty, after serving `served` frames since it
    /// last was.
    fn budget(&mut self, served: usize) -> Duration {
        if self.full.is_zero() {
            return Duration::ZERO;
        }
        if let Some(slept) = self.slept.take() {
            // The sleep includes the wake-up itself (tens of µs on a busy virtual machine):
            // a request that came within the budget may have woken the reader later.
            if slept < 2 * self.full && served == 1 {
                self.lone += 1;
                if self.lone >= self.need {
                    self.polling = true;
                }
            } else {
                self.lone = 0;
                self.polling = false;
            }
        } else if served > 1 {
            self.lone = 0;
            self.polling = false;
        }
        if !self.polling {
            return Duration::ZERO;
        }
        self.probe_in -= 1;
        if self.probe_in == 0 {
            self.probe_in = SPIN_PROBE_EVERY;
            self.polling = false;
            self.lone = self.need - 1;
            return Duration::ZERO;
        }
        self.full
    }

    /// A poll found data.
    fn caught(&mut self) {
        self.need = SPIN_AFTER_LONE;
    }

    /// A poll ran out without data.
    fn missed(&mut self) {
        self.polling = false;
        self.lone = 0;
        self.need = (self.need * 2).min(SPIN_NEED_MAX);
    }

    /// The reader slept for `slept` before the socket became readable.
    fn woke_after(&mut self, slept: Duration) {
        self.slept = Some(slept);
    }
}

/// Bytes of ciphertext read from the socket at a time.
const TLS_READ_CHUNK: usize = 64 * 1024;

/// [`read_loop`] for a TLS connection: read ciphertext the same way (without waiting, then
/// busy-polling, then sleeping), decrypt it into the frame buffer, dispatch, flush.
async fn read_loop_tls(
    node: Arc<Node>,
    conn: Arc<Conn>,
    last_read: Arc<AtomicU64>,
    started: Instant,
) -> Result<Read, Disconnect> {
    let Some(tls) = &conn.tls else {
        return Err(Disconnect::NotTls);
    };
    let mut frames = FrameReader::with_limits(node.config.limits);
    let mut cipher = vec![0u8; TLS_READ_CHUNK];
    let mut spin = Spin::new(node.config.busy_poll);
    let mut phase = node.phase();
    // The first frames may have come with the handshake's last bytes.
    let mut fed = tls.feed(&[], &mut frames);
    let mut served = 0;
    loop {
        let closed = match fed {
            Ok(fed) => fed == Fed::Closed,
            Err(e) => {
                // rustls queued an alert saying why: send it before closing.
                conn.flush_now();
                return Err(Disconnect::Tls(e));
            }
        };
        served += serve(&node, &conn, &mut frames, served)?;
        if closed {
            return Ok(Read::Closed);
        }
        if *phase.borrow() >= super::Phase::Drain {
            // Shutting down: what was read is served; stop reading.
            return Ok(Read::Drained);
        }
        let n = loop {
            match conn.stream.try_read(&mut cipher) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let budget = spin.budget(served);
                    served = 0;
                    if !budget.is_zero() {
                        match spin_for(&conn.stream, &mut cipher, budget) {
                            Ok(n) => {
                                break n;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => spin.missed(),
                            Err(e) => return Err(Disconnect::Read(e)),
                        }
                    }
                    let slept = Instant::now();
                    tokio::select! {
                        r = conn.stream.readable() => r.map_err(Disconnect::Read)?,
                        _ = phase.wait_for(|p| *p >= super::Phase::Drain) => {
                            return Ok(Read::Drained);
                        }
                    }
                    spin.woke_after(slept.elapsed());
                }
                Err(e) => return Err(Disconnect::Read(e)),
            }
        };
        if n == 0 {
            return Ok(Read::Closed);
        }
        last_read.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        fed = tls.feed(&cipher[..n], &mut frames);
    }
}

/// At shutdown: reads and serves what the peer has already sent, without waiting for more.
fn drain_rest(
    node: &Arc<Node>,
    conn: &Arc<Conn>,
    frames: &mut FrameReader,
) -> Result<Read, Disconnect> {
    let _reading = ReadingGuard::enter(conn.id);
    loop {
        drain(node, conn, frames)?;
        match conn.stream.try_read(frames.read_space()) {
            Ok(0) => break,
            Ok(n) => frames.filled(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(Disconnect::Read(e)),
        }
    }
    drop(_reading);
    conn.flush_now();
    Ok(Read::Drained)
}

/// Dispatches every whole frame buffered. Returns how many there were.
fn drain(
    node: &Arc<Node>,
    conn: &Arc<Conn>,
    frames: &mut FrameReader,
) -> Result<usize, Disconnect> {
    let mut served = 0;
    loop {
        served += 1;
        match frames.next_frame() {
            Ok(Some(Frame::Tick)) => {}
            Ok(Some(Frame::Control(control))) => dispatch::dispatch(node, &conn.peer, *control),
            Ok(Some(Frame::OverLimit(control, reason))) => {
                dispatch::over_limit(node, &conn.peer, *control, reason)
            }
            // As the BEAM does: a peer that sends what is not a distribution message is broken.
            Ok(Some(Frame::Undecodable(why))) => {
                return Err(Disconnect::Undecodable(why));
            }
            Ok(None) => return Ok(served - 1),
            Err(e) => return Err(e.into()),
        }
    }
}

async fn write_loop(
    conn: Arc<Conn>,
    net_ticktime: Duration,
    last_read: Arc<AtomicU64>,
    started: Instant,
) -> Result<(), Disconnect> {
    let mut ticker = tokio::time::interval(net_ticktime / 4);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut chunk: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            _ = conn.wake.notified() => {
                if conn.burst.swap(false, Ordering::Relaxed) {
                    // Let the other callers woken by the same batch of replies queue their
                    // frames first (a deferred task runs once the worker's queue is empty).
                    // Only for those: replies made elsewhere (a record's turn on a task of
                    // its own) are written at once, as before.
                    tokio::task::yield_now().await;
                }
            }
            _ = ticker.tick() => {
                let silent_ms = (started.elapsed().as_millis() as u64)
                    .saturating_sub(last_read.load(Ordering::Relaxed));
                if silent_ms > net_ticktime.as_millis() as u64 {
                    return Err(Disconnect::Silent(silent_ms));
                }
                conn.out.lock().frames.tick();
            }
        }
        if let Some(tls) = &conn.tls {
            write_tls(&conn, tls).await?;
            continue;
        }
        loop {
            {
                let mut out = conn.out.lock();
                out.woken = false;
                if out.frames.buf.is_empty() {
                    out.busy = false;
                    break;
                }
                out.busy = true;
                chunk.clear();
                std::mem::swap(&mut chunk, &mut out.frames.buf);
            }
            write_all(&conn.stream, &chunk).await?;
            chunk.clear();
            release_if_large(&mut chunk);
        }
    }
}

/// Hands what is queued to rustls and writes until rustls holds nothing, waiting for the socket
/// as needed. Nothing is held outside rustls, so the reader's own flushes stay in order.
async fn write_tls(conn: &Conn, tls: &TlsChannel) -> Result<(), Disconnect> {
    loop {
        let done = {
            let mut out = conn.out.lock();
            out.woken = false;
            let done = tls.push(&out.frames.buf, &conn.stream);
            out.frames.buf.clear();
            release_if_large(&mut out.frames.buf);
            done.map_err(Disconnect::Write)?
        };
        if done {
            return Ok(());
        }
        conn.stream.writable().await.map_err(Disconnect::Write)?;
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> Result<(), Disconnect> {
    while !bytes.is_empty() {
        stream.writable().await.map_err(Disconnect::Write)?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Disconnect::Write(e)),
        }
    }
    Ok(())
}

/// Polls the socket for up to `spin` before the reader goes to sleep, reading straight from the
/// descriptor (tokio's readiness only changes when its I/O driver runs). Returns the bytes read.
fn spin_for(stream: &TcpStream, buf: &mut [u8], spin: Duration) -> std::io::Result<usize> {
    use std::io::Read;
    let socket = socket2::SockRef::from(stream);
    let start = Instant::now();
    while start.elapsed() < spin {
        match (&*socket).read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::ErrorKind::WouldBlock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: Duration = Duration::from_micros(100);
    const SOON: Duration = Duration::from_micros(30);
    const LATE: Duration = Duration::from_micros(500);

    /// `n` wake-ups, each after `slept`, each to a batch of `frames`; the last budget.
    fn wake(spin: &mut Spin, n: u32, slept: Duration, frames: usize) -> Duration {
        let mut budget = Duration::ZERO;
        for _ in 0..n {
            spin.woke_after(slept);
            budget = spin.budget(frames);
        }
        budget
    }

    #[test]
    fn polls_only_for_a_lone_caller_that_comes_back_soon() {
        let mut spin = Spin::new(FULL);
        assert_eq!(
            wake(&mut spin, SPIN_AFTER_LONE - 1, SOON, 1),
            Duration::ZERO
        );
        assert_eq!(wake(&mut spin, 1, SOON, 1), FULL);
        // Polls that catch the next request keep it polling...
        spin.caught();
        assert_eq!(spin.budget(1), FULL);
        // ...until a batch comes in.
        assert_eq!(spin.budget(5), Duration::ZERO);
        assert_eq!(
            wake(&mut spin, SPIN_AFTER_LONE * 4, SOON, 8),
            Duration::ZERO
        );
        // A caller that comes back later than the budget is never polled for.
        assert_eq!(
            wake(&mut spin, SPIN_AFTER_LONE * 4, LATE, 1),
            Duration::ZERO
        );
    }

    #[test]
    fn a_poll_that_finds_nothing_makes_the_next_one_wait_longer() {
        let mut spin = Spin::new(FULL);
        assert_eq!(wake(&mut spin, SPIN_AFTER_LONE, SOON, 1), FULL);
        spin.missed();
        assert_eq!(spin.budget(1), Duration::ZERO);
        assert_eq!(wake(&mut spin, SPIN_AFTER_LONE, SOON, 1), Duration::ZERO);
        assert_eq!(wake(&mut spin, SPIN_AFTER_LONE, SOON, 1), FULL);
        // One that finds data resets the wait.
        spin.caught();
        spin.missed();
        assert_eq!(wake(&mut spin, 2 * SPIN_AFTER_LONE, SOON, 1), FULL);
    }

    #[test]
    fn while_polling_it_sleeps_now_and_then_to_look() {
        let mut spin = Spin::new(FULL);
        assert_eq!(wake(&mut spin, SPIN_AFTER_LONE, SOON, 1), FULL);
        let sleeps = (0..SPIN_PROBE_EVERY * 2)
            .filter(|_| spin.budget(1).is_zero())
            .count();
        assert!(sleeps >= 1, "never probed");
        // Turned off, it never polls.
        let mut off = Spin::new(Duration::ZERO);
        assert_eq!(wake(&mut off, 100, SOON, 1), Duration::ZERO);
    }
}
