//! A one-shot caller: connect to a node as a hidden node (over TLS when given a
//! [`DistTls`]), `gen_server:call` a registered process, return the reply. Used by
//! `ash-gen-server call` so the node can be driven without any BEAM.

use crate::term::{Atom, Pid, Ref, Value};
use crate::wire::dist::{Control, FrameWriter};
use crate::wire::frame::{Frame, FrameReader};
use crate::wire::tls::{DistTls, TlsHandshakeError};
use crate::wire::{epmd, handshake};
use erl_dist::DistributionFlags;
use erl_dist::node::NodeName;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a one-shot call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The node could not be found or reached.
    #[error(transparent)]
    Dial(#[from] epmd::DialError),
    /// The TLS handshake failed (TLS distribution): an untrusted certificate among other
    /// reasons, or no answer in time.
    #[error("handshake with {node} failed: {source}")]
    Tls {
        /// The node called.
        node: String,
        /// Why.
        source: crate::wire::tls::TlsHandshakeError,
    },
    /// The handshake failed (a wrong cookie among other reasons).
    #[error("handshake with {node} failed: {source}")]
    Handshake {
        /// The node called.
        node: String,
        /// Why.
        source: handshake::HandshakeError,
    },
    /// This caller's own name could not be made.
    #[error("cannot name the caller: {0}")]
    Name(String),
    /// The connection failed after the handshake.
    #[error("{0}")]
    Connection(String),
    /// No reply in time.
    #[error("no reply from {name} on {node} within {timeout:?}")]
    Timeout {
        /// The process called.
        name: String,
        /// Its node.
        node: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Calls `{name, node}` with `request` and waits up to `timeout` for the reply; over TLS
/// distribution when `tls` is given (the node must run it too).
pub async fn call(
    node: &NodeName,
    cookie: &str,
    epmd_port: u16,
    tls: Option<&DistTls>,
    name: &str,
    request: &Value,
    timeout: Duration,
) -> Result<Value, CallError> {
    let stream = epmd::dial(node, epmd_port).await?;
    match tls {
        None => call_on(stream, false, node, cookie, name, request, timeout).await,
        Some(tls) => {
            let tls_failed = |source| CallError::Tls {
                node: node.to_string(),
                source,
            };
            let stream = tokio::time::timeout(timeout, tls.connect(stream, node.host()))
                .await
                .map_err(|_| {
                    tls_failed(TlsHandshakeError::Failed(format!(
                        "no answer within {timeout:?}"
                    )))
                })?
                .map_err(tls_failed)?;
            call_on(stream, true, node, cookie, name, request, timeout).await
        }
    }
}

async fn call_on<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tls: bool,
    node: &NodeName,
    cookie: &str,
    name: &str,
    request: &Value,
    timeout: Duration,
) -> Result<Value, CallError> {
    let me: NodeName = format!("call{}@{}", std::process::id(), node.host())
        .parse()
        .map_err(|e| CallError::Name(format!("{e}")))?;
    let creation = rand::random::<u32>().max(4);
    let local = handshake::local_node(&me, creation);
    let offered = local.flags;
    let handshake = async {
        if tls {
            // Inside TLS, handshake messages have 4-byte lengths (see handshake::Packet4).
            handshake::connect(handshake::Packet4::new(stream), local, cookie)
                .await
                .map(|(s, peer)| (s.into_inner(), peer))
        } else {
            handshake::connect(stream, local, cookie).await
        }
    };
    let (mut stream, peer) = tokio::time::timeout(timeout, handshake)
        .await
        .unwrap_or(Err(handshake::HandshakeError::Timeout))
        .map_err(|source| CallError::Handshake {
            node: node.to_string(),
            source: if tls { source } else { source.hint_plain() },
        })?;
    let atom_cache = (offered & peer.flags).contains(DistributionFlags::DIST_HDR_ATOM_CACHE);

    let me_atom = Atom::new(&me.to_string()).map_err(|e| CallError::Name(e.to_string()))?;
    let from = Pid {
        node: me_atom,
        id: 1,
        serial: 0,
        creation,
    };
    let tag = Value::Ref(Box::new(Ref::new(me_atom, creation, &[1, 2, 3])));
    let message = Value::tuple(vec![
        Value::Atom(Atom::from_static("$gen_call")),
        Value::pair(Value::Pid(Box::new(from)), tag.clone()),
        request.clone(),
    ]);
    let to = Atom::new(name).map_err(|e| CallError::Name(e.to_string()))?;
    let mut writer = FrameWriter::new(atom_cache);
    writer.reg_send(&from, to, |w| w.term(&message));
    stream
        .write_all(&writer.buf)
        .await
        .map_err(|e| CallError::Connection(format!("send failed: {e}")))?;
    stream
        .flush()
        .await
        .map_err(|e| CallError::Connection(format!("send failed: {e}")))?;

    let mut frames = FrameReader::new();
    let wait = async {
        loop {
            match frames.next_frame() {
                Ok(Some(Frame::Control(control))) => {
                    if let Control::Send { to, message, .. } = *control
                        && to == from
                        && let Value::Tuple(items) = message
                        && items.len() == 2
                        && items[0] == tag
                    {
                        return Ok(items.into_vec().pop().unwrap_or_else(Value::nil));
                    }
                    continue;
                }
                Ok(Some(Frame::Tick)) => {
                    let _ = stream.write_all(&[0, 0, 0, 0]).await;
                    let _ = stream.flush().await;
                    continue;
                }
                Ok(Some(Frame::Undecodable(e))) => {
                    return Err(CallError::Connection(format!("undecodable reply: {e}")));
                }
                Ok(Some(Frame::OverLimit(_, why))) => {
                    return Err(CallError::Connection(format!(
                        "a reply over a limit: {why}"
                    )));
                }
                Ok(None) => {}
                Err(e) => return Err(CallError::Connection(format!("connection lost: {e}"))),
            }
            match stream.read(frames.read_space()).await {
                Ok(0) => {
                    return Err(CallError::Connection(
                        "connection closed before the reply".into(),
                    ));
                }
                Ok(n) => frames.filled(n),
                Err(e) => return Err(CallError::Connection(format!("connection lost: {e}"))),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| CallError::Timeout {
            name: name.to_string(),
            node: node.to_string(),
            timeout,
        })?
}
