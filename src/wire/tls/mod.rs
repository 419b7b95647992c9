//! TLS distribution, compatible with OTP's `inet_tls_dist` (`erl -proto_dist inet_tls`).
//!
//! As in OTP, EPMD is unchanged and TLS starts right after the TCP connect: the TLS handshake
//! first, then the ordinary distribution handshake and frames inside TLS. [`options`] reads
//! the cluster's `-ssl_dist_optfile`; [`DistTls`] builds the rustls configurations from it
//! (the `ring` provider) and runs the TLS handshakes; [`channel`] carries a connection's bytes
//! afterwards; [`verify`] holds the certificate checks OTP options ask for that rustls does
//! not have built in.
//!
//! What is checked, as OTP 25's `inet_tls_dist` does with the same file:
//!
//! - Accepting (`server` options): the node presents `certfile`/`keyfile`. With
//!   `{verify, verify_peer}` a client certificate is asked for and its chain verified against
//!   `cacertfile`; a client without one is still accepted unless `{fail_if_no_peer_cert, true}`.
//!   The client's host name is not checked (OTP does not either).
//! - Dialling (`client` options): with `{verify, verify_peer}` the server's chain is verified
//!   against `cacertfile`, and its certificate must be issued to the host part of the node name
//!   (`rust@10.0.0.5` → the IP address 10.0.0.5, `rust@db1.example` → the DNS name), as
//!   `inet_tls_dist` passes `{server_name_indication, Host}`; the client option
//!   `{server_name_indication, disable}` keeps the chain check and drops the name check, and
//!   `{server_name_indication, "name"}` checks that name instead. Without `verify`, the client
//!   verifies when it has a `cacertfile` (OTP 26's default) and otherwise accepts any
//!   certificate with a warning in the log (OTP 25's default).
//! - `versions` defaults to `['tlsv1.2']`, `inet_tls_dist`'s default; TLS 1.3 is there for the
//!   asking.

pub mod channel;
pub mod options;
pub mod verify;

pub use channel::TlsChannel;
pub use options::{Note, OptFile, OptionsError, ServerNameIndication, Side, SideOptions};

use options::{TlsVersion, Verify};
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why the TLS configuration cannot be built (at start).
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The option file is unreadable or wrong.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// A certificate or key file named in it is unreadable or wrong.
    #[error("{side} option {option} {path}: {message}")]
    File {
        /// The side whose option names the file.
        side: Side,
        /// The option.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The options do not make a usable configuration.
    #[error("{side} options: {message}")]
    Config {
        /// The side.
        side: Side,
        /// What is wrong.
        message: String,
    },
}

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsHandshakeError {
    /// The peer's name cannot be checked against a certificate.
    #[error("cannot check the certificate of {host}: {message}")]
    ServerName {
        /// The host.
        host: String,
        /// Why.
        message: String,
    },
    /// The handshake itself failed.
    #[error("TLS handshake failed: {0}")]
    Failed(String),
}

/// The TLS side of distribution: the configurations for accepting and for dialling.
#[derive(Clone)]
pub struct DistTls {
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
    sni: Option<ServerNameIndication>,
    notes: Vec<Note>,
}

impl std::fmt::Debug for DistTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistTls")
            .field("accepts", &self.server.is_some())
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

impl DistTls {
    /// Reads the option file and builds both sides (a node accepts and dials). Fails when the
    /// file has no `server` section: a node without a certificate could not accept anyone.
    pub fn for_node(path: &Path) -> Result<DistTls, TlsConfigError> {
        DistTls::new(&OptFile::read(path)?, true)
    }

    /// Reads the option file and builds the dialling side only (a one-shot caller); the
    /// `server` section is checked but its files are not read.
    pub fn for_caller(path: &Path) -> Result<DistTls, TlsConfigError> {
        DistTls::new(&OptFile::read(path)?, false)
    }

    /// Builds the configurations from checked options; `accept` says whether the server side
    /// is needed.
    pub fn new(file: &OptFile, accept: bool) -> Result<DistTls, TlsConfigError> {
        let mut notes = Vec::new();
        let server = if accept {
            let opts = file.server.as_ref().ok_or_else(|| TlsConfigError::Config {
                side: Side::Server,
                message: "the option file has no {server, [...]} section: without a \
                          certificate the node cannot accept TLS connections"
                    .into(),
            })?;
            notes.extend(opts.notes.iter().cloned());
            Some(Arc::new(server_config(opts, &mut notes)?))
        } else {
            None
        };
        let empty = SideOptions::default();
        let client_opts = file.client.as_ref().unwrap_or(&empty);
        notes.extend(client_opts.notes.iter().cloned());
        if let Some(ServerNameIndication::Host(name)) = &client_opts.server_name_indication {
            ServerName::try_from(name.clone()).map_err(|e| TlsConfigError::Config {
                side: Side::Client,
                message: format!("server_name_indication {name:?} is not a host name: {e}"),
            })?;
        }
        let client = Arc::new(client_config(client_opts, &mut notes)?);
        Ok(DistTls {
            server,
            client,
            sni: client_opts.server_name_indication.clone(),
            notes,
        })
    }

    /// What to tell in the log about the options (accepted without effect, defaults taken).
    pub fn notes(&self) -> &[Note] {
        &self.notes
    }

    /// Runs the accepting side of the TLS handshake on a fresh connection.
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, TlsHandshakeError> {
        let config = self.server.clone().ok_or_else(|| {
            TlsHandshakeError::Failed("this node has no server configuration".into())
        })?;
        TlsAcceptor::from(config)
            .accept(stream)
            .await
            .map_err(|e| TlsHandshakeError::Failed(describe(&e, true)))
    }

    /// Runs the dialling side of the TLS handshake with the node on `host` (the host part of
    /// its name).
    pub async fn connect(
        &self,
        stream: TcpStream,
        host: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TlsHandshakeError> {
        let name = self.server_name(host)?;
        TlsConnector::from(self.client.clone())
            .connect(name, stream)
            .await
            .map_err(|e| TlsHandshakeError::Failed(describe(&e, false)))
    }

    /// The name the server's certificate is checked against.
    fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsHandshakeError> {
        let (checked, strict) = match &self.sni {
            Some(ServerNameIndication::Host(name)) => (name.as_str(), true),
            Some(ServerNameIndication::Disable) => (host, false),
            None => (host, true),
        };
        match ServerName::try_from(checked.to_string()) {
            Ok(name) => Ok(name),
            // Not checked anyway: any valid name will do.
            Err(_) if !strict => Ok(ServerName::IpAddress(
                std::net::Ipv4Addr::UNSPECIFIED.into(),
            )),
            Err(e) => Err(TlsHandshakeError::ServerName {
                host: checked.to_string(),
                message: format!("{e} (set {{server_name_indication, ...}} in the client options)"),
            }),
        }
    }
}

/// A handshake error with the hint that makes the usual causes plain.
fn describe(e: &std::io::Error, accepting: bool) -> String {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidMessage(_)) if accepting => {
            format!("{e} (the peer does not speak TLS: a node using plain TCP distribution?)")
        }
        Some(_) => e.to_string(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => format!(
            "the peer closed the connection ({e}): it refused our certificate, or does not speak TLS"
        ),
        None => e.to_string(),
    }
}

fn provider(opts: &SideOptions) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(ciphers) = &opts.ciphers {
        let all = std::mem::take(&mut provider.cipher_suites);
        provider.cipher_suites = ciphers
            .iter()
            .filter_map(|c| all.iter().find(|s| s.suite() == *c).copied())
            .collect();
    }
    Arc::new(provider)
}

fn versions(opts: &SideOptions) -> Vec<&'static SupportedProtocolVersion> {
    opts.versions
        .as_deref()
        .unwrap_or(&[TlsVersion::Tls12])
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect()
}

fn server_config(
    opts: &SideOptions,
    notes: &mut Vec<Note>,
) -> Result<ServerConfig, TlsConfigError> {
    let side = Side::Server;
    let config_error = |message: String| TlsConfigError::Config { side, message };
    let (chain, key) = identity(side, opts, notes)?.ok_or_else(|| {
        config_error(
            "no certificate: add certfile (and keyfile unless the key is in certfile)".into(),
        )
    })?;
    let provider = provider(opts);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(opts))
        .map_err(|e| config_error(format!("ciphers and versions leave nothing usable: {e}")))?;
    let fail_if_no_peer_cert = opts.fail_if_no_peer_cert.unwrap_or(false);
    let builder = match opts.verify.unwrap_or(Verify::None) {
        Verify::Peer => {
            let roots = roots(side, opts)?.ok_or_else(|| {
                config_error("verify_peer needs the CAs to trust: add cacertfile".into())
            })?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if fail_if_no_peer_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| config_error(format!("cannot verify clients: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        Verify::None => {
            if fail_if_no_peer_cert {
                return Err(config_error(
                    "fail_if_no_peer_cert needs {verify, verify_peer}".into(),
                ));
            }
            builder.with_no_client_auth()
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| config_error(format!("the certificate and key do not go together: {e}")))?;
    config.ignore_client_order = opts.honor_cipher_order.unwrap_or(false);
    if opts.reuse_sessions == Some(false) {
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}

fn client_config(
    opts: &SideOptions,
    notes: &mut Vec<Note>,
) -> Result<ClientConfig, TlsConfigError> {
    let side = Side::Client;
    let config_error = |message: String| TlsConfigError::Config { side, message };
    let provider = provider(opts);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(opts))
        .map_err(|e| config_error(format!("ciphers and versions leave nothing usable: {e}")))?;
    let roots = roots(side, opts)?;
    let verify = match (opts.verify, &roots) {
        (Some(v), _) => v,
        (None, Some(_)) => Verify::Peer,
        (None, None) => {
            notes.push(Note {
                side,
                option: "verify".into(),
                warn: true,
                text: "not given and no cacertfile: the certificates of the nodes this node \
                       dials are not verified (OTP 25's default, with the same warning)"
                    .into(),
            });
            Verify::None
        }
    };
    let builder = match verify {
        Verify::Peer => {
            let roots = roots.ok_or_else(|| {
                config_error("verify_peer needs the CAs to trust: add cacertfile".into())
            })?;
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| config_error(format!("cannot verify servers: {e}")))?;
            if opts.server_name_indication == Some(ServerNameIndication::Disable) {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verify::ChainOnly::new(webpki)))
            } else {
                builder.with_webpki_verifier(webpki)
            }
        }
        Verify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::AnyServer::new(provider))),
    };
    let mut config = match identity(side, opts, notes)? {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            config_error(format!("the certificate and key do not go together: {e}"))
        })?,
        None => builder.with_no_client_auth(),
    };
    if opts.server_name_indication == Some(ServerNameIndication::Disable) {
        config.enable_sni = false;
    }
    if opts.reuse_sessions == Some(false) {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(config)
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The certificate chain and key to present, if any: `cert`/`certfile`, and `key`/`keyfile`
/// (or the key inside `certfile`).
fn identity(
    side: Side,
    opts: &SideOptions,
    notes: &mut Vec<Note>,
) -> Result<Option<Identity>, TlsConfigError> {
    let chain = if !opts.cert.is_empty() {
        opts.cert.clone()
    } else if let Some(path) = &opts.certfile {
        let pem = read(side, "certfile", path)?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(side, "certfile", path, format!("bad PEM: {e}")))?;
        if chain.is_empty() {
            return Err(file_error(
                side,
                "certfile",
                path,
                "holds no CERTIFICATE".into(),
            ));
        }
        chain
    } else {
        if opts.key.is_some() || opts.keyfile.is_some() {
            return Err(TlsConfigError::Config {
                side,
                message: "a key without a certificate: add certfile".into(),
            });
        }
        return Ok(None);
    };
    let key = if let Some(key) = &opts.key {
        key.clone_key()
    } else {
        let (option, path) = match &opts.keyfile {
            Some(path) => ("keyfile", path),
            None => (
                "certfile",
                opts.certfile
                    .as_ref()
                    .ok_or_else(|| TlsConfigError::Config {
                        side,
                        message: "an inline cert without a key: add key or keyfile".into(),
                    })?,
            ),
        };
        let pem = read(side, option, path)?;
        if String::from_utf8_lossy(&pem).contains("ENCRYPTED") {
            return Err(file_error(
                side,
                option,
                path,
                "holds an encrypted private key, which this node cannot decrypt (password): \
                 give it the key decrypted (openssl pkey -in KEY -out PLAIN.key), protected by \
                 its file permissions"
                    .into(),
            ));
        }
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            let why = match e {
                rustls_pki_types::pem::Error::NoItemsFound if option == "certfile" => {
                    "holds no private key: add keyfile".to_string()
                }
                rustls_pki_types::pem::Error::NoItemsFound => "holds no private key".to_string(),
                other => format!("bad PEM: {other}"),
            };
            file_error(side, option, path, why)
        })?
    };
    if opts.password {
        notes.push(Note {
            side,
            option: "password".into(),
            warn: false,
            text: "not needed: the key is not encrypted".into(),
        });
    }
    Ok(Some((chain, key)))
}

/// The CAs to trust (`cacerts` and `cacertfile`), if any are given.
fn roots(side: Side, opts: &SideOptions) -> Result<Option<RootCertStore>, TlsConfigError> {
    let mut certs = opts.cacerts.clone();
    if let Some(path) = &opts.cacertfile {
        let pem = read(side, "cacertfile", path)?;
        let from_file = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(side, "cacertfile", path, format!("bad PEM: {e}")))?;
        if from_file.is_empty() {
            return Err(file_error(
                side,
                "cacertfile",
                path,
                "holds no CERTIFICATE".into(),
            ));
        }
        certs.extend(from_file);
    }
    if certs.is_empty() {
        return Ok(None);
    }
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        store.add(cert).map_err(|e| TlsConfigError::Config {
            side,
            message: format!("trusted CA certificate {} is unusable: {e}", i + 1),
        })?;
    }
    Ok(Some(store))
}

fn read(side: Side, option: &'static str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|e| file_error(side, option, path, e.to_string()))
}

fn file_error(side: Side, option: &'static str, path: &Path, message: String) -> TlsConfigError {
    TlsConfigError::File {
        side,
        option,
        path: path.to_path_buf(),
        message,
    }
}
