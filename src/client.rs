//! A one-shot caller: connect to a node as a hidden node, `gen_server:call` a registered process,
//! return the reply. Used by `ash-gen-server call` so the node can be driven without any BEAM.

use crate::term::{Value, from_term, to_term};
use crate::wire::frame::{self, Frame};
use crate::wire::{epmd, handshake};
use eetf::{Pid, Term, Tuple};
use erl_dist::message::Message;
use erl_dist::node::NodeName;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Calls `{name, node}` with `request` and waits up to `timeout` for the reply.
pub async fn call(
    node: &NodeName,
    cookie: &str,
    epmd_port: u16,
    name: &str,
    request: &Value,
    timeout: Duration,
) -> Result<Value, String> {
    let port = epmd::lookup(node.host(), epmd_port, node.name())
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{node} is not registered with EPMD on {}", node.host()))?;
    let stream = TcpStream::connect((node.host(), port))
        .await
        .map_err(|e| format!("cannot reach {node}: {e}"))?;
    let me: NodeName = format!("call{}@{}", std::process::id(), node.host())
        .parse()
        .map_err(|e| format!("{e}"))?;
    let creation = rand::random::<u32>().max(4);
    let (stream, _peer) = handshake::connect(stream, handshake::local_node(&me, creation), cookie)
        .await
        .map_err(|e| format!("handshake with {node} failed: {e}"))?;
    let (read_half, mut write_half) = stream.into_split();

    let from = Pid::new(me.to_string(), 1, 0, creation);
    let tag = eetf::Reference::from((me.to_string().as_str(), vec![1, 2, 3]));
    let message = Term::from(Tuple::from(vec![
        Term::from(eetf::Atom::from("$gen_call")),
        Term::from(Tuple::from(vec![
            Term::from(from.clone()),
            Term::from(tag.clone()),
        ])),
        to_term(request),
    ]));
    let mut out = Vec::new();
    frame::encode(
        Message::reg_send(from.clone(), eetf::Atom::from(name), message),
        &mut out,
    )?;
    write_half
        .write_all(&out)
        .await
        .map_err(|e| format!("send failed: {e}"))?;

    let mut reader = BufReader::new(read_half);
    let mut buf = Vec::new();
    let wait = async {
        loop {
            match frame::read_frame(&mut reader, &mut buf).await {
                Ok(Frame::Message(m)) => {
                    let payload = match *m {
                        Message::Send(s) if s.to_pid == from => s.message,
                        Message::SendSender(s) if s.to_pid == from => s.message,
                        _ => continue,
                    };
                    if let Term::Tuple(t) = payload
                        && t.elements.len() == 2
                        && t.elements[0] == Term::from(tag.clone())
                    {
                        let reply = t
                            .elements
                            .into_iter()
                            .nth(1)
                            .unwrap_or(Term::from(eetf::List::nil()));
                        return from_term(reply).map_err(|e| e.to_string());
                    }
                }
                Ok(Frame::Tick) => {
                    let _ = write_half.write_all(&[0, 0, 0, 0]).await;
                }
                Ok(Frame::Undecodable(e)) => return Err(format!("undecodable reply: {e}")),
                Err(e) => return Err(format!("connection lost: {e}")),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| format!("no reply from {name} on {node} within {timeout:?}"))?
}
