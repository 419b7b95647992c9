//! EPMD, the Erlang port mapper: registering this node, looking peers up, and an embedded EPMD
//! server for machines where none is running.
//!
//! The client side is `erl_dist`'s `EpmdClient` over tokio sockets. The server speaks the subset
//! of the EPMD protocol that nodes and `epmd -names` use: `ALIVE2_REQ` (register; the
//! registration lives as long as its connection), `PORT_PLEASE2_REQ`, `NAMES_REQ`, and refuses
//! `KILL_REQ` while nodes are registered, as the real `epmd` does.

use erl_dist::epmd::{EpmdClient, NodeEntry};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// The well-known EPMD port.
pub const DEFAULT_EPMD_PORT: u16 = 4369;

/// What can go wrong talking to EPMD.
#[derive(Debug, thiserror::Error)]
pub enum EpmdError {
    /// No EPMD answers at the address.
    #[error("no EPMD at {addr}: {source}")]
    Unreachable {
        /// Where EPMD was looked for.
        addr: String,
        /// The connection error.
        source: std::io::Error,
    },
    /// EPMD answered with an error or something unexpected.
    #[error("EPMD at {addr}: {message}")]
    Protocol {
        /// Where EPMD was.
        addr: String,
        /// What it said.
        message: String,
    },
}

async fn connect(host: &str, port: u16) -> Result<Compat<TcpStream>, EpmdError> {
    TcpStream::connect((host, port))
        .await
        .map(|s| {
            let _ = s.set_nodelay(true);
            s.compat()
        })
        .map_err(|source| EpmdError::Unreachable {
            addr: format!("{host}:{port}"),
            source,
        })
}

/// A live registration: the node stays registered while this is kept.
pub struct Registration {
    _connection: Compat<TcpStream>,
    /// The creation EPMD assigned to this incarnation of the node.
    pub creation: u32,
}

/// Registers `name` (the part before `@`) as a hidden node listening on `port`.
pub async fn register(epmd_port: u16, name: &str, port: u16) -> Result<Registration, EpmdError> {
    let connection = connect("127.0.0.1", epmd_port).await?;
    let entry = NodeEntry::new_hidden(name, port);
    let (connection, creation) =
        EpmdClient::new(connection)
            .register(entry)
            .await
            .map_err(|e| EpmdError::Protocol {
                addr: format!("127.0.0.1:{epmd_port}"),
                message: match e {
                    erl_dist::epmd::EpmdError::RegisterNodeError { .. } => {
                        format!(
                            "the name {name:?} is already registered (is another node running?)"
                        )
                    }
                    other => other.to_string(),
                },
            })?;
    Ok(Registration {
        _connection: connection,
        creation: creation.get(),
    })
}

/// Looks up the distribution port of `name` on `host`.
pub async fn lookup(host: &str, epmd_port: u16, name: &str) -> Result<Option<u16>, EpmdError> {
    let connection = connect(host, epmd_port).await?;
    EpmdClient::new(connection)
        .get_node(name)
        .await
        .map(|entry| entry.map(|e| e.port))
        .map_err(|e| EpmdError::Protocol {
            addr: format!("{host}:{epmd_port}"),
            message: e.to_string(),
        })
}

/// Why a node could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Its host's EPMD could not be asked.
    #[error(transparent)]
    Epmd(#[from] EpmdError),
    /// Its host's EPMD does not know it.
    #[error("{node} is not registered with EPMD on {host}")]
    NotRegistered {
        /// The node.
        node: String,
        /// Its host.
        host: String,
    },
    /// Its distribution port does not answer.
    #[error("cannot reach {node} on port {port}: {source}")]
    Unreachable {
        /// The node.
        node: String,
        /// The port EPMD gave.
        port: u16,
        /// The connection error.
        source: std::io::Error,
    },
}

/// Looks `node` up in its host's EPMD and opens a TCP connection to its distribution port.
pub async fn dial(node: &erl_dist::node::NodeName, epmd_port: u16) -> Result<TcpStream, DialError> {
    let port = lookup(node.host(), epmd_port, node.name())
        .await?
        .ok_or_else(|| DialError::NotRegistered {
            node: node.to_string(),
            host: node.host().to_string(),
        })?;
    let stream = TcpStream::connect((node.host(), port))
        .await
        .map_err(|source| DialError::Unreachable {
            node: node.to_string(),
            port,
            source,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Whether an EPMD answers on this machine's `port`.
pub async fn is_running(port: u16) -> bool {
    match connect("127.0.0.1", port).await {
        Ok(connection) => EpmdClient::new(connection).get_names().await.is_ok(),
        Err(_) => false,
    }
}

const ALIVE2_X_RESP: u8 = 118;
const PORT2_RESP: u8 = 119;
const ALIVE2_REQ: u8 = 120;
const PORT_PLEASE2_REQ: u8 = 122;
const NAMES_REQ: u8 = 110;
const KILL_REQ: u8 = 107;

/// A node registered with the embedded server.
#[derive(Clone)]
struct Entry {
    port: u16,
    node_type: u8,
    protocol: u8,
    highest: u16,
    lowest: u16,
    extra: Vec<u8>,
}

/// An EPMD server running inside this process.
pub struct EpmdServer {
    listener: TcpListener,
    nodes: Arc<Mutex<HashMap<String, Entry>>>,
}

impl EpmdServer {
    /// Binds the EPMD port on every interface, as `epmd` does.
    pub async fn bind(port: u16) -> std::io::Result<EpmdServer> {
        let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
        Ok(EpmdServer {
            listener,
            nodes: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until the task is dropped.
    pub async fn run(self) {
        let port = self.port();
        loop {
            let Ok((stream, peer)) = self.listener.accept().await else {
                continue;
            };
            let nodes = self.nodes.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(stream, nodes, port).await {
                    tracing::debug!(%peer, error = %e, "epmd: request failed");
                }
            });
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    nodes: Arc<Mutex<HashMap<String, Entry>>>,
    epmd_port: u16,
) -> std::io::Result<()> {
    let len = stream.read_u16().await? as usize;
    if len == 0 {
        return Ok(());
    }
    let mut req = vec![0u8; len];
    stream.read_exact(&mut req).await?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed EPMD request");
    match req[0] {
        ALIVE2_REQ => {
            let body = &req[1..];
            if body.len() < 10 {
                return Err(bad());
            }
            let u16_at = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
            let nlen = u16_at(8) as usize;
            let name_end = 10 + nlen;
            if body.len() < name_end + 2 {
                return Err(bad());
            }
            let name = String::from_utf8_lossy(&body[10..name_end]).into_owned();
            let elen = u16_at(name_end) as usize;
            let extra = body
                .get(name_end + 2..name_end + 2 + elen)
                .ok_or_else(bad)?
                .to_vec();
            let entry = Entry {
                port: u16_at(0),
                node_type: body[2],
                protocol: body[3],
                highest: u16_at(4),
                lowest: u16_at(6),
                extra,
            };
            let taken = {
                let mut nodes = nodes.lock();
                if nodes.contains_key(&name) {
                    true
                } else {
                    nodes.insert(name.clone(), entry);
                    false
                }
            };
            let creation: u32 = rand::random::<u32>().max(4);
            let mut resp = vec![ALIVE2_X_RESP, u8::from(taken)];
            resp.extend_from_slice(&creation.to_be_bytes());
            stream.write_all(&resp).await?;
            if taken {
                return Ok(());
            }
            tracing::info!(node = %name, "epmd: registered");
            // The registration lasts as long as the connection.
            let mut sink = [0u8; 64];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            nodes.lock().remove(&name);
            tracing::info!(node = %name, "epmd: unregistered");
        }
        PORT_PLEASE2_REQ => {
            let name = String::from_utf8_lossy(&req[1..]).into_owned();
            let entry = nodes.lock().get(&name).cloned();
            let mut resp = vec![PORT2_RESP];
            match entry {
                None => resp.push(1),
                Some(e) => {
                    resp.push(0);
                    resp.extend_from_slice(&e.port.to_be_bytes());
                    resp.push(e.node_type);
                    resp.push(e.protocol);
                    resp.extend_from_slice(&e.highest.to_be_bytes());
                    resp.extend_from_slice(&e.lowest.to_be_bytes());
                    resp.extend_from_slice(&(name.len() as u16).to_be_bytes());
                    resp.extend_from_slice(name.as_bytes());
                    resp.extend_from_slice(&(e.extra.len() as u16).to_be_bytes());
                    resp.extend_from_slice(&e.extra);
                }
            }
            stream.write_all(&resp).await?;
        }
        NAMES_REQ => {
            let mut resp = (epmd_port as u32).to_be_bytes().to_vec();
            let mut names: Vec<(String, u16)> = nodes
                .lock()
                .iter()
                .map(|(n, e)| (n.clone(), e.port))
                .collect();
            names.sort();
            for (name, port) in names {
                resp.extend_from_slice(format!("name {name} at port {port}\n").as_bytes());
            }
            stream.write_all(&resp).await?;
        }
        KILL_REQ => {
            // Like `epmd` without -relaxed_command_check: never killed while in use.
            let answer: &[u8] = if nodes.lock().is_empty() {
                b"OK"
            } else {
                b"NO"
            };
            stream.write_all(answer).await?;
        }
        other => {
            tracing::debug!(tag = other, "epmd: unsupported request");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_server_registers_and_looks_up_nodes() {
        let server = EpmdServer::bind(0).await.unwrap();
        let port = server.port();
        let task = tokio::spawn(server.run());

        assert!(is_running(port).await);
        assert_eq!(lookup("127.0.0.1", port, "alpha").await.unwrap(), None);

        let registration = register(port, "alpha", 4242).await.unwrap();
        assert!(registration.creation >= 4);
        assert_eq!(
            lookup("127.0.0.1", port, "alpha").await.unwrap(),
            Some(4242)
        );

        // A second node cannot take the same name.
        assert!(register(port, "alpha", 4343).await.is_err());

        // Dropping the registration unregisters the node.
        drop(registration);
        let mut gone = false;
        for _ in 0..100 {
            if lookup("127.0.0.1", port, "alpha").await.unwrap().is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(gone, "registration outlived its connection");
        task.abort();
    }
}
