//! The distribution handshake, both sides, with cookie authentication.
//!
//! `erl_dist` implements the handshake over `futures` I/O; this module bridges tokio streams to
//! it (a plain socket, or a TLS stream from [`super::tls`]), decides which capability flags this
//! node offers, and refuses peers that lack the flags OTP 25+ makes mandatory. After the
//! handshake the stream is handed back for [`super::frame`] to use.
//!
//! Over plain TCP a handshake message has a 2-byte length. OTP's `inet_tls_dist` puts its TLS
//! socket in `{packet, 4}` from the start, so inside TLS the same messages have a 4-byte
//! length: [`Packet4`] converts between the two for the handshake's duration.

use erl_dist::DistributionFlags as F;
use erl_dist::handshake::{ClientSideHandshake, HandshakeStatus, ServerSideHandshake};
use erl_dist::node::{Creation, LocalNode, NodeName, PeerNode};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// The flags this node offers.
///
/// The OTP 25/26 mandatory set, plus distributed monitors (by pid and by name), exit payloads,
/// aliases, `SEND_SENDER` and the distribution header's atom cache. Not `PUBLISHED`: this is a
/// hidden node. No fragments: frames are always whole.
pub fn offered_flags() -> F {
    F::mandatory()
        | F::DIST_HDR_ATOM_CACHE
        | F::DIST_MONITOR
        | F::DIST_MONITOR_NAME
        | F::EXIT_PAYLOAD
        | F::ALIAS
        | F::SEND_SENDER
        | F::BIG_SEQTRACE_LABELS
}

/// Flags a peer must offer for this node to talk to it.
pub fn required_flags() -> F {
    F::EXTENDED_REFERENCES
        | F::EXTENDED_PIDS_PORTS
        | F::NEW_FLOATS
        | F::UTF8_ATOMS
        | F::MAP_TAGS
        | F::BIG_CREATION
        | F::HANDSHAKE_23
        | F::DIST_MONITOR
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's cookie is not ours (in either direction).
    #[error("cookie mismatch")]
    CookieMismatch,
    /// The peer lacks capabilities this node needs.
    #[error("peer {peer} lacks required distribution flags {missing:#x}")]
    MissingFlags {
        /// The peer's name.
        peer: String,
        /// The missing flag bits.
        missing: u64,
    },
    /// The peer asked for a dynamic name, which this node does not hand out.
    #[error("peer asked for a dynamic node name, which is not supported")]
    DynamicName,
    /// The peer closed the connection after our answer to its challenge: it refused us, most
    /// likely because our cookie is not its cookie.
    #[error(
        "the peer refused the handshake (closed the connection after our challenge reply: the cookies most likely differ)"
    )]
    Refused,
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
    /// Anything else: bad bytes, a closed socket, an unexpected status.
    #[error("{0}")]
    Protocol(String),
}

impl HandshakeError {
    /// This error, with a hint when a plain TCP handshake met something else: a node running
    /// TLS distribution answers a plain name with a TLS alert.
    pub fn hint_plain(self) -> HandshakeError {
        match self {
            HandshakeError::Protocol(e) => HandshakeError::Protocol(format!(
                "{e} (does the peer run TLS distribution? then this side needs --proto-dist inet_tls too)"
            )),
            other => other,
        }
    }
}

impl From<erl_dist::handshake::HandshakeError> for HandshakeError {
    fn from(e: erl_dist::handshake::HandshakeError) -> Self {
        match e {
            erl_dist::handshake::HandshakeError::CookieMismatch => HandshakeError::CookieMismatch,
            other => HandshakeError::Protocol(other.to_string()),
        }
    }
}

/// This node's identity for handshakes.
pub fn local_node(name: &NodeName, creation: u32) -> LocalNode {
    let mut node = LocalNode::new(name.clone(), Creation::new(creation));
    node.flags = offered_flags();
    node
}

fn check_flags(peer: &PeerNode) -> Result<(), HandshakeError> {
    let missing = required_flags().bits() & !peer.flags.bits();
    if missing != 0 {
        return Err(HandshakeError::MissingFlags {
            peer: peer.name.to_string(),
            missing,
        });
    }
    Ok(())
}

/// Runs the accepting side: returns the socket and the authenticated peer.
///
/// `accept_name` decides, from the peer's name, whether to go on (`false` refuses it, e.g. a
/// second connection from a node already connected).
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    local: LocalNode,
    cookie: &str,
    accept_name: impl FnOnce(&NodeName) -> bool,
) -> Result<(S, PeerNode), HandshakeError> {
    let mut handshake = ServerSideHandshake::new(stream.compat(), local, cookie);
    let name = handshake
        .execute_recv_name()
        .await?
        .ok_or(HandshakeError::DynamicName)?;
    let status = if accept_name(&name) {
        HandshakeStatus::Ok
    } else {
        HandshakeStatus::Nok
    };
    let (stream, peer) = handshake.execute_rest(status).await?;
    check_flags(&peer)?;
    Ok((stream.into_inner(), peer))
}

/// Runs the connecting side against a peer that listens on `stream`.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    local: LocalNode,
    cookie: &str,
) -> Result<(S, PeerNode), HandshakeError> {
    let mut handshake = ClientSideHandshake::new(stream.compat(), local, cookie);
    match handshake
        .execute_send_name(erl_dist::LOWEST_DISTRIBUTION_PROTOCOL_VERSION)
        .await?
    {
        HandshakeStatus::Ok | HandshakeStatus::OkSimultaneous => {}
        other => {
            return Err(HandshakeError::Protocol(format!(
                "peer answered {other:?} to our name"
            )));
        }
    }
    // A peer that does not share our cookie says nothing: it closes the connection once it has
    // read our answer to its challenge.
    let (stream, peer) =
        handshake
            .execute_rest(true)
            .await
            .map_err(|e| match HandshakeError::from(e) {
                HandshakeError::Protocol(why) if why.contains("end of file") => {
                    HandshakeError::Refused
                }
                other => other,
            })?;
    check_flags(&peer)?;
    Ok((stream.into_inner(), peer))
}

/// Handshake messages with 4-byte lengths on `S` (as `inet_tls_dist` sends them), 2-byte
/// lengths to the handshake code (as `erl_dist` writes them).
///
/// Reads never take more from `S` than the message being read, so after the handshake the
/// stream carries on exactly where the distribution frames begin.
pub struct Packet4<S> {
    inner: S,
    /// The 4-byte length being read, and how much of it arrived.
    head: [u8; 4],
    head_len: usize,
    /// The message body being read (its length is known once `head` is whole).
    body: Vec<u8>,
    body_len: usize,
    /// The converted message (2-byte length and body) being handed out, and how much was.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes written by the handshake code, not yet a whole message.
    written: Vec<u8>,
    /// Converted messages (4-byte length and body) not yet written to `S`.
    pending: Vec<u8>,
}

impl<S> Packet4<S> {
    /// Wraps a stream for the handshake.
    pub fn new(inner: S) -> Packet4<S> {
        Packet4 {
            inner,
            head: [0; 4],
            head_len: 0,
            body: Vec::new(),
            body_len: 0,
            out: Vec::new(),
            out_pos: 0,
            written: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// The stream, once the handshake is over.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Packet4<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.out_pos == this.out.len() {
            if this.head_len < 4 {
                let mut rb = ReadBuf::new(&mut this.head[this.head_len..]);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Ok(())); // end of stream
                }
                this.head_len += n;
                if this.head_len == 4 {
                    let len = u32::from_be_bytes(this.head) as usize;
                    if len > u16::MAX as usize {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("a handshake message of {len} bytes"),
                        )));
                    }
                    this.body = vec![0; len];
                    this.body_len = 0;
                }
                continue;
            }
            if this.body_len < this.body.len() {
                let mut rb = ReadBuf::new(&mut this.body[this.body_len..]);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                this.body_len += n;
                continue;
            }
            // A whole message: hand it out with a 2-byte length.
            this.out.clear();
            this.out
                .extend_from_slice(&(this.body.len() as u16).to_be_bytes());
            this.out.append(&mut this.body);
            this.out_pos = 0;
            this.head_len = 0;
        }
        let n = buf.remaining().min(this.out.len() - this.out_pos);
        buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
        this.out_pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Packet4<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.written.extend_from_slice(buf);
        while this.written.len() >= 2 {
            let len = u16::from_be_bytes([this.written[0], this.written[1]]) as usize;
            if this.written.len() < 2 + len {
                break;
            }
            this.pending.extend_from_slice(&(len as u32).to_be_bytes());
            this.pending.extend_from_slice(&this.written[2..2 + len]);
            this.written.drain(..2 + len);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.pending.is_empty() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &this.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.pending.drain(..n);
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(
        server_cookie: &'static str,
        client_cookie: &'static str,
    ) -> (
        Result<(TcpStream, PeerNode), HandshakeError>,
        Result<(TcpStream, PeerNode), HandshakeError>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let local = local_node(&"server@127.0.0.1".parse().unwrap(), 7);
            accept(stream, local, server_cookie, |_| true).await
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let local = local_node(&"client@127.0.0.1".parse().unwrap(), 9);
        let client = connect(stream, local, client_cookie).await;
        (server.await.unwrap(), client)
    }

    #[tokio::test]
    async fn same_cookie_authenticates_both_sides() {
        let (server, client) = pair("secret", "secret").await;
        let (_, peer_of_server) = server.unwrap();
        let (_, peer_of_client) = client.unwrap();
        assert_eq!(peer_of_server.name.to_string(), "client@127.0.0.1");
        assert_eq!(peer_of_client.name.to_string(), "server@127.0.0.1");
        assert_eq!(peer_of_client.creation.map(|c| c.get()), Some(7));
        assert!(
            !peer_of_server.flags.contains(F::PUBLISHED),
            "we are hidden"
        );
    }

    #[tokio::test]
    async fn wrong_cookie_is_refused() {
        let (server, client) = pair("secret", "wrong").await;
        assert!(matches!(server, Err(HandshakeError::CookieMismatch)));
        assert!(matches!(client, Err(HandshakeError::Refused)), "{client:?}");
    }

    #[tokio::test]
    async fn packet4_framing_authenticates_and_leaves_the_stream_at_the_frames() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let local = local_node(&"server@127.0.0.1".parse().unwrap(), 7);
            let (stream, peer) = accept(Packet4::new(stream), local, "secret", |_| true)
                .await
                .unwrap();
            let mut stream = stream.into_inner();
            let mut frame = [0u8; 8];
            stream.read_exact(&mut frame).await.unwrap();
            (peer.name.to_string(), frame)
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let local = local_node(&"client@127.0.0.1".parse().unwrap(), 9);
        let (stream, peer) = connect(Packet4::new(stream), local, "secret")
            .await
            .unwrap();
        assert_eq!(peer.name.to_string(), "server@127.0.0.1");
        // The first frame right behind the handshake is read by the server as it was sent.
        let mut stream = stream.into_inner();
        stream.write_all(&[0, 0, 0, 4, 1, 2, 3, 4]).await.unwrap();
        let (client_name, frame) = server.await.unwrap();
        assert_eq!(client_name, "client@127.0.0.1");
        assert_eq!(frame, [0, 0, 0, 4, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn packet4_turns_two_byte_messages_into_four_byte_ones() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(1024);
        let mut framed = Packet4::new(a);
        framed.write_all(&[0, 3, b'a']).await.unwrap();
        framed.write_all(b"bc").await.unwrap();
        framed.flush().await.unwrap();
        let mut got = [0u8; 7];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, &[0, 0, 0, 3, b'a', b'b', b'c']);
        b.write_all(&[0, 0, 0, 2, b'x', b'y', 9]).await.unwrap();
        let mut back = [0u8; 4];
        framed.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, &[0, 2, b'x', b'y']);
        // The byte after the message is still in the stream.
        let mut rest = [0u8; 1];
        framed.into_inner().read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, [9]);
    }
}
