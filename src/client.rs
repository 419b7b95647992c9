//! A one-shot caller: connect to a node as a hidden node, `gen_server:call` a registered process,
//! return the reply. Used by `ash-gen-server call` so the node can be driven without any BEAM.

use crate::term::{Atom, Pid, Ref, Value};
use crate::wire::dist::{Control, FrameWriter};
use crate::wire::frame::{Frame, FrameReader};
use crate::wire::{epmd, handshake};
use erl_dist::DistributionFlags;
use erl_dist::node::NodeName;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Calls `{name, node}` with `request` and waits up to `timeout` for the reply.
pub async fn call(
    node: &NodeName,
    cookie: &str,
    epmd_port: u16,
    name: &str,
    request: &Value,
    timeout: Duration,
) -> Result<Value, String> {
    let stream = epmd::dial(node, epmd_port).await?;
    let me: NodeName = format!("call{}@{}", std::process::id(), node.host())
        .parse()
        .map_err(|e| format!("{e}"))?;
    let creation = rand::random::<u32>().max(4);
    let local = handshake::local_node(&me, creation);
    let offered = local.flags;
    let (mut stream, peer) = handshake::connect(stream, local, cookie)
        .await
        .map_err(|e| format!("handshake with {node} failed: {e}"))?;
    let atom_cache = (offered & peer.flags).contains(DistributionFlags::DIST_HDR_ATOM_CACHE);

    let me_atom = Atom::new(&me.to_string()).map_err(|e| e.to_string())?;
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
    let to = Atom::new(name).map_err(|e| e.to_string())?;
    let mut writer = FrameWriter::new(atom_cache);
    writer.reg_send(&from, to, |w| w.term(&message));
    stream
        .write_all(&writer.buf)
        .await
        .map_err(|e| format!("send failed: {e}"))?;

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
                    continue;
                }
                Ok(Some(Frame::Undecodable(e))) => return Err(format!("undecodable reply: {e}")),
                Ok(Some(Frame::OverLimit(_, why))) => {
                    return Err(format!("a reply over a limit: {why}"));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("connection lost: {e}")),
            }
            match stream.read(frames.read_space()).await {
                Ok(0) => return Err("connection closed before the reply".to_string()),
                Ok(n) => frames.filled(n),
                Err(e) => return Err(format!("connection lost: {e}")),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| format!("no reply from {name} on {node} within {timeout:?}"))?
}
