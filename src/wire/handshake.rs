//! The distribution handshake, both sides, with cookie authentication.
//!
//! `erl_dist` implements the handshake over `futures` I/O; this module bridges tokio sockets to
//! it, decides which capability flags this node offers, and refuses peers that lack the flags
//! OTP 25+ makes mandatory. After the handshake the plain tokio socket is handed back for
//! [`super::frame`] to use.

use erl_dist::DistributionFlags as F;
use erl_dist::handshake::{ClientSideHandshake, HandshakeStatus, ServerSideHandshake};
use erl_dist::node::{Creation, LocalNode, NodeName, PeerNode};
use tokio::net::TcpStream;
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
pub async fn accept(
    stream: TcpStream,
    local: LocalNode,
    cookie: &str,
    accept_name: impl FnOnce(&NodeName) -> bool,
) -> Result<(TcpStream, PeerNode), HandshakeError> {
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
pub async fn connect(
    stream: TcpStream,
    local: LocalNode,
    cookie: &str,
) -> Result<(TcpStream, PeerNode), HandshakeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

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
}
