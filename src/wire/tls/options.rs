//! The TLS distribution option file: the file a BEAM node takes with
//! `-proto_dist inet_tls -ssl_dist_optfile FILE`, so one file serves the whole cluster.
//!
//! The file holds one Erlang term (read as `ssl_dist_sup` reads it, `%` comments allowed):
//!
//! ```erlang
//! [{server, [{certfile, "node.pem"}, {keyfile, "node.key"}, {cacertfile, "ca.pem"},
//!            {verify, verify_peer}, {fail_if_no_peer_cert, true}]},
//!  {client, [{certfile, "node.pem"}, {keyfile, "node.key"}, {cacertfile, "ca.pem"},
//!            {verify, verify_peer}]}].
//! ```
//!
//! This module turns it into [`SideOptions`] for each side, checking every value; building the
//! rustls configurations from them is [`super::DistTls`]'s job. Options OTP knows that have no
//! counterpart here (`secure_renegotiate`, `crl_check`, `log_level`, ...) are accepted with a
//! [`Note`] for the log; an option OTP does not know, or a value of the wrong shape, is an error
//! naming it.

use crate::term::{Value, parse_term};
use rustls::CipherSuite;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use std::fmt;
use std::path::{Path, PathBuf};

/// Which `ssl` call the options are for: `ssl:handshake/3` (accepting) or `ssl:connect/4`
/// (dialling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Options for connections this node accepts.
    Server,
    /// Options for connections this node makes.
    Client,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Server => "server",
            Side::Client => "client",
        })
    }
}

/// `{verify, verify_peer | verify_none}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Check the peer's certificate chain against the trusted CAs.
    Peer,
    /// Accept any certificate.
    None,
}

/// A TLS protocol version from `{versions, [...]}` that this node supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// `'tlsv1.2'`.
    Tls12,
    /// `'tlsv1.3'`.
    Tls13,
}

/// The client's `{server_name_indication, ...}`: which name the server's certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerNameIndication {
    /// `disable`: no host name check (the chain is still verified), no SNI sent.
    Disable,
    /// A host name to check (and send) instead of the host part of the node name.
    Host(String),
}

/// An option accepted without effect, or with an effect worth telling: logged at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The side whose options hold it.
    pub side: Side,
    /// The option's name.
    pub option: String,
    /// Whether it deserves a warning (the node does less than OTP would with it).
    pub warn: bool,
    /// What happens with it.
    pub text: String,
}

/// The options of one side, checked.
#[derive(Debug, Default)]
pub struct SideOptions {
    /// `certfile`: PEM certificate (chain); the key may be in it too.
    pub certfile: Option<PathBuf>,
    /// `cert`: DER certificates given inline.
    pub cert: Vec<CertificateDer<'static>>,
    /// `keyfile`: PEM private key.
    pub keyfile: Option<PathBuf>,
    /// `key`: a DER private key given inline.
    pub key: Option<PrivateKeyDer<'static>>,
    /// `password` was given (for an encrypted key).
    pub password: bool,
    /// `cacertfile`: PEM trusted CA certificates.
    pub cacertfile: Option<PathBuf>,
    /// `cacerts`: DER trusted CA certificates given inline.
    pub cacerts: Vec<CertificateDer<'static>>,
    /// `verify`.
    pub verify: Option<Verify>,
    /// `fail_if_no_peer_cert` (server).
    pub fail_if_no_peer_cert: Option<bool>,
    /// `depth`.
    pub depth: Option<u32>,
    /// `versions`, the ones this node supports, in the given order.
    pub versions: Option<Vec<TlsVersion>>,
    /// `ciphers`, the ones this node supports, in the given order.
    pub ciphers: Option<Vec<CipherSuite>>,
    /// `honor_cipher_order` (server).
    pub honor_cipher_order: Option<bool>,
    /// `reuse_sessions`.
    pub reuse_sessions: Option<bool>,
    /// `server_name_indication` (client).
    pub server_name_indication: Option<ServerNameIndication>,
    /// What to tell in the log about the options.
    pub notes: Vec<Note>,
}

/// The whole file: a section per side (either may be missing).
#[derive(Debug, Default)]
pub struct OptFile {
    /// `{server, Options}`.
    pub server: Option<SideOptions>,
    /// `{client, Options}`.
    pub client: Option<SideOptions>,
}

/// Why the option file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The text is not one Erlang term.
    #[error("not an Erlang term: {0}")]
    Syntax(String),
    /// The term is not `[{server, [...]}, {client, [...]}]`.
    #[error("expected [{{server, Options}}, {{client, Options}}], {0}")]
    Shape(String),
    /// Options this node (and OTP's `ssl`) does not know.
    #[error("unknown {side} option{}: {}", if names.len() == 1 { "" } else { "s" }, names.join(", "))]
    Unknown {
        /// The side.
        side: Side,
        /// Their names.
        names: Vec<String>,
    },
    /// A known option with a value that cannot be used.
    #[error("{side} option {option}: {message}")]
    Value {
        /// The side.
        side: Side,
        /// The option.
        option: String,
        /// What is wrong.
        message: String,
    },
}

/// Options that exist in OTP's `ssl` but have no counterpart in this node: accepted, with what
/// happens instead, and whether that deserves a warning.
const NOTED: &[(&str, bool, &str)] = &[
    (
        "secure_renegotiate",
        false,
        "not needed: this node never renegotiates (TLS 1.3 has no renegotiation; a TLS 1.2 request is refused)",
    ),
    (
        "client_renegotiation",
        false,
        "not needed: this node never renegotiates",
    ),
    (
        "customize_hostname_check",
        true,
        "not applied: host names are matched by rustls (exact names, `*.` wildcards, IP addresses)",
    ),
    (
        "crl_check",
        true,
        "not applied: certificate revocation lists are not checked",
    ),
    (
        "crl_cache",
        true,
        "not applied: certificate revocation lists are not checked",
    ),
    (
        "hibernate_after",
        false,
        "not needed: a connection here is not a process that hibernates",
    ),
    (
        "log_level",
        false,
        "ignored: this node logs TLS errors with its own log (RUST_LOG)",
    ),
    (
        "log_alert",
        false,
        "ignored: this node logs TLS errors with its own log (RUST_LOG)",
    ),
    (
        "keep_secrets",
        false,
        "ignored: session keys are never exported",
    ),
    (
        "dhfile",
        false,
        "not needed: only ECDHE key exchange is offered",
    ),
    (
        "erl_dist",
        false,
        "implied: every connection is a distribution connection",
    ),
    (
        "session_tickets",
        false,
        "ignored: TLS 1.3 session tickets follow reuse_sessions",
    ),
    (
        "eccs",
        false,
        "ignored: the key exchange groups are rustls's (X25519, P-256, P-384)",
    ),
    (
        "supported_groups",
        false,
        "ignored: the key exchange groups are rustls's (X25519, P-256, P-384)",
    ),
    (
        "signature_algs",
        false,
        "ignored: the signature schemes are rustls's",
    ),
    (
        "signature_algs_cert",
        false,
        "ignored: the signature schemes are rustls's",
    ),
    ("padding_check", false, "ignored: TLS 1.0 only"),
    ("beast_mitigation", false, "ignored: TLS 1.0 only"),
    (
        "middlebox_comp_mode",
        false,
        "ignored: rustls's default (on) is used",
    ),
];

/// The cipher suites this node has: OpenSSL name, IANA (RFC) name, OTP's `{key_exchange, cipher}`
/// for the map and tuple forms, and the suite.
const CIPHERS: &[(&str, &str, (&str, &str), CipherSuite)] = &[
    (
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_256_GCM_SHA384",
        ("any", "aes_256_gcm"),
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_128_GCM_SHA256",
        ("any", "aes_128_gcm"),
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
        ("any", "chacha20_poly1305"),
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ("ecdhe_ecdsa", "aes_256_gcm"),
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ("ecdhe_ecdsa", "aes_128_gcm"),
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ("ecdhe_ecdsa", "chacha20_poly1305"),
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ("ecdhe_rsa", "aes_256_gcm"),
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ("ecdhe_rsa", "aes_128_gcm"),
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ("ecdhe_rsa", "chacha20_poly1305"),
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

impl OptFile {
    /// Reads and checks the option file at `path`. Relative paths inside it are kept as they
    /// are (relative to the working directory, as for `erl`).
    pub fn read(path: &Path) -> Result<OptFile, OptionsError> {
        let text = std::fs::read(path).map_err(|source| OptionsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // OTP reads the file as Latin-1 unless it says otherwise; UTF-8 covers the usual case
        // (ASCII paths) and Latin-1 the rest.
        let text = match String::from_utf8(text) {
            Ok(text) => text,
            Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
        };
        OptFile::parse(&text)
    }

    /// Checks the text of an option file.
    pub fn parse(text: &str) -> Result<OptFile, OptionsError> {
        let term = parse_term(text).map_err(OptionsError::Syntax)?;
        let sections = term
            .as_list()
            .ok_or_else(|| OptionsError::Shape(format!("got {term:?}")))?;
        let mut file = OptFile::default();
        for section in sections {
            let (name, options) = match section.as_tuple() {
                Some([name, options]) => (name, options),
                _ => return Err(OptionsError::Shape(format!("got the element {section:?}"))),
            };
            let (side, slot) = match name.as_atom().map(|a| a.as_str()) {
                Some("server") => (Side::Server, &mut file.server),
                Some("client") => (Side::Client, &mut file.client),
                _ => {
                    return Err(OptionsError::Shape(format!("got a section named {name:?}")));
                }
            };
            if slot.is_some() {
                return Err(OptionsError::Shape(format!("got two {side} sections")));
            }
            *slot = Some(SideOptions::parse(side, options)?);
        }
        Ok(file)
    }
}

impl SideOptions {
    /// Checks one side's option list.
    pub fn parse(side: Side, options: &Value) -> Result<SideOptions, OptionsError> {
        let list = options.as_list().ok_or_else(|| {
            OptionsError::Shape(format!("the {side} options are not a list: {options:?}"))
        })?;
        let mut opts = SideOptions::default();
        let mut unknown = Vec::new();
        for option in list {
            let (name, value) = match option.as_tuple() {
                Some([name, value]) => match name.as_atom() {
                    Some(name) => (name.as_str(), value),
                    None => {
                        return Err(OptionsError::Shape(format!(
                            "a {side} option is not {{Name, Value}}: {option:?}"
                        )));
                    }
                },
                _ => match option.as_atom() {
                    // Bare atoms are socket options such as `binary`: the distribution sets
                    // those itself.
                    Some(atom) => {
                        unknown.push(atom.as_str().to_string());
                        continue;
                    }
                    None => {
                        return Err(OptionsError::Shape(format!(
                            "a {side} option is not {{Name, Value}}: {option:?}"
                        )));
                    }
                },
            };
            if !opts.set(side, name, value)? {
                unknown.push(name.to_string());
            }
        }
        if !unknown.is_empty() {
            return Err(OptionsError::Unknown {
                side,
                names: unknown,
            });
        }
        Ok(opts)
    }

    fn note(&mut self, side: Side, option: &str, warn: bool, text: impl Into<String>) {
        self.notes.push(Note {
            side,
            option: option.to_string(),
            warn,
            text: text.into(),
        });
    }

    /// Takes one option; false when the name is unknown.
    fn set(&mut self, side: Side, name: &str, value: &Value) -> Result<bool, OptionsError> {
        let bad = |message: String| OptionsError::Value {
            side,
            option: name.to_string(),
            message,
        };
        match name {
            "certfile" => {
                self.certfile =
                    Some(path(value).ok_or_else(|| bad(expected("a file name", value)))?)
            }
            "keyfile" => {
                self.keyfile = Some(path(value).ok_or_else(|| bad(expected("a file name", value)))?)
            }
            "cacertfile" => {
                self.cacertfile =
                    Some(path(value).ok_or_else(|| bad(expected("a file name", value)))?)
            }
            "cert" => {
                self.cert = der_list(value)
                    .ok_or_else(|| bad(expected("a DER binary or a list of them", value)))?
            }
            "cacerts" => {
                self.cacerts =
                    der_list(value).ok_or_else(|| bad(expected("a list of DER binaries", value)))?
            }
            "key" => {
                self.key = Some(key(value).ok_or_else(|| {
                    bad(expected(
                        "{'RSAPrivateKey' | 'ECPrivateKey' | 'PrivateKeyInfo', DerBinary}",
                        value,
                    ))
                })?)
            }
            "certs_keys" => {
                let entries = value
                    .as_list()
                    .ok_or_else(|| bad(expected("a list of maps", value)))?;
                match entries {
                    [] => {}
                    [entry] => self.certs_keys(side, entry)?,
                    _ => {
                        return Err(bad(format!(
                            "{} certificate/key pairs given: this node serves one (keep the first)",
                            entries.len()
                        )));
                    }
                }
            }
            "password" => {
                // A string, or a fun that returns one: either way only an encrypted key needs it.
                if text(value).is_none() && !matches!(value, Value::Opaque(_)) {
                    return Err(bad(expected("a string", value)));
                }
                self.password = true;
            }
            "verify" => {
                self.verify = Some(match value.as_atom().map(|a| a.as_str()) {
                    Some("verify_peer") => Verify::Peer,
                    Some("verify_none") => Verify::None,
                    _ => return Err(bad(expected("verify_peer or verify_none", value))),
                })
            }
            "fail_if_no_peer_cert" => {
                let b = boolean(value).ok_or_else(|| bad(expected("true or false", value)))?;
                if side == Side::Client {
                    self.note(side, name, false, "a server option: ignored for the client");
                } else {
                    self.fail_if_no_peer_cert = Some(b);
                }
            }
            "honor_cipher_order" => {
                let b = boolean(value).ok_or_else(|| bad(expected("true or false", value)))?;
                if side == Side::Client {
                    self.note(side, name, false, "a server option: ignored for the client");
                } else {
                    self.honor_cipher_order = Some(b);
                }
            }
            "reuse_sessions" => {
                self.reuse_sessions = Some(match value.as_atom().map(|a| a.as_str()) {
                    Some("true") | Some("save") => true,
                    Some("false") => false,
                    _ => return Err(bad(expected("true, false or save", value))),
                })
            }
            "depth" => {
                let depth = value
                    .as_int()
                    .filter(|d| (0..=255).contains(d))
                    .ok_or_else(|| bad(expected("an integer from 0 to 255", value)))?;
                self.depth = Some(depth as u32);
                self.note(
                    side,
                    name,
                    false,
                    "not applied as such: chains are built by rustls (webpki), which allows at \
                     most 6 intermediate CAs",
                );
            }
            "versions" => self.versions = Some(self.versions(side, name, value)?),
            "ciphers" => self.ciphers = Some(self.ciphers(side, name, value)?),
            "server_name_indication" => {
                let sni = match value.as_atom().map(|a| a.as_str()) {
                    Some("disable") => ServerNameIndication::Disable,
                    _ => ServerNameIndication::Host(
                        text(value)
                            .filter(|h| !h.is_empty())
                            .ok_or_else(|| bad(expected("a host name or disable", value)))?,
                    ),
                };
                if side == Side::Server {
                    self.note(side, name, false, "a client option: ignored for the server");
                } else {
                    if sni == ServerNameIndication::Disable {
                        self.note(
                            side,
                            name,
                            false,
                            "disable: the server's certificate chain is verified, its host name is not",
                        );
                    }
                    self.server_name_indication = Some(sni);
                }
            }
            "verify_fun" => self.verify_fun(side, name, value)?,
            _ => match NOTED.iter().find(|(option, _, _)| *option == name) {
                Some((option, warn, text)) => {
                    // `crl_check, false` asks for nothing: no need to tell.
                    let asks_nothing = *option == "crl_check"
                        && value.as_atom().map(|a| a.as_str()) == Some("false");
                    if !asks_nothing {
                        self.note(side, option, *warn, *text);
                    }
                }
                None => return Ok(false),
            },
        }
        Ok(true)
    }

    /// `certs_keys => [#{certfile, keyfile, password, cert, key}]` (OTP 25+), one entry.
    fn certs_keys(&mut self, side: Side, entry: &Value) -> Result<(), OptionsError> {
        let bad = |message: String| OptionsError::Value {
            side,
            option: "certs_keys".to_string(),
            message,
        };
        let entries = entry
            .as_map()
            .ok_or_else(|| bad(expected("a map", entry)))?;
        for (k, v) in entries {
            match k.as_atom().map(|a| a.as_str()) {
                Some(name @ ("certfile" | "keyfile" | "password" | "cert" | "key")) => {
                    self.set(side, name, v)?;
                }
                _ => return Err(bad(format!("unknown key {k:?}"))),
            }
        }
        Ok(())
    }

    fn versions(
        &mut self,
        side: Side,
        name: &str,
        value: &Value,
    ) -> Result<Vec<TlsVersion>, OptionsError> {
        let bad = |message: String| OptionsError::Value {
            side,
            option: name.to_string(),
            message,
        };
        let list = value
            .as_list()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad(expected("a list such as ['tlsv1.3', 'tlsv1.2']", value)))?;
        let mut versions = Vec::new();
        let mut left_out = Vec::new();
        for v in list {
            match v.as_atom().map(|a| a.as_str()) {
                Some("tlsv1.3") => versions.push(TlsVersion::Tls13),
                Some("tlsv1.2") => versions.push(TlsVersion::Tls12),
                Some(old @ ("tlsv1.1" | "tlsv1" | "sslv3")) => left_out.push(old),
                _ => return Err(bad(format!("unknown version {v:?}"))),
            }
        }
        if versions.is_empty() {
            return Err(bad(format!(
                "none of {} is supported here (TLS 1.2 and 1.3 are)",
                left_out.join(", ")
            )));
        }
        if !left_out.is_empty() {
            self.note(
                side,
                name,
                true,
                format!("left out (not supported here): {}", left_out.join(", ")),
            );
        }
        Ok(versions)
    }

    fn ciphers(
        &mut self,
        side: Side,
        name: &str,
        value: &Value,
    ) -> Result<Vec<CipherSuite>, OptionsError> {
        let bad = |message: String| OptionsError::Value {
            side,
            option: name.to_string(),
            message,
        };
        // An OpenSSL string "A:B:C", a list of such names, or a list of maps/tuples.
        let entries: Vec<CipherEntry> = if let Some(s) = text(value).filter(|s| !s.is_empty()) {
            s.split(':')
                .map(|n| CipherEntry::Name(n.trim().to_string()))
                .collect()
        } else if let Some(list) = value.as_list() {
            list.iter()
                .map(|v| {
                    if let Some(s) = text(v) {
                        Ok(CipherEntry::Name(s))
                    } else if let Some(kc) = cipher_key(v) {
                        Ok(CipherEntry::Spec(kc, format!("{v:?}")))
                    } else {
                        Err(bad(expected("a cipher suite name, map or tuple", v)))
                    }
                })
                .collect::<Result<_, _>>()?
        } else {
            return Err(bad(expected(
                "a list of cipher suites or an OpenSSL cipher string",
                value,
            )));
        };
        let mut suites = Vec::new();
        let mut left_out = Vec::new();
        for entry in entries {
            let found = CIPHERS.iter().find(|(openssl, iana, kc, _)| match &entry {
                CipherEntry::Name(n) => n == openssl || n == iana,
                CipherEntry::Spec((k, c), _) => kc.0 == k && kc.1 == c,
            });
            match found {
                Some((.., suite)) if !suites.contains(suite) => suites.push(*suite),
                Some(_) => {}
                None => left_out.push(match entry {
                    CipherEntry::Name(n) => n,
                    CipherEntry::Spec(_, shown) => shown,
                }),
            }
        }
        if suites.is_empty() {
            return Err(bad(format!(
                "none of the cipher suites is available here (AES-GCM and ChaCha20-Poly1305 with ECDHE are): {}",
                left_out.join(", ")
            )));
        }
        if !left_out.is_empty() {
            self.note(
                side,
                name,
                false,
                format!("left out (not available here): {}", left_out.join(", ")),
            );
        }
        Ok(suites)
    }

    fn verify_fun(&mut self, side: Side, name: &str, value: &Value) -> Result<(), OptionsError> {
        let fun = value
            .as_tuple()
            .filter(|t| t.len() == 2)
            .map(|t| &t[0])
            .ok_or_else(|| OptionsError::Value {
                side,
                option: name.to_string(),
                message: expected("{fun Module:Function/Arity, InitialState}", value),
            })?;
        match fun {
            Value::Opaque(term) => match &**term {
                eetf::Term::ExternalFun(f)
                    if f.module.name == "inet_tls_dist"
                        && f.function.name == "verify_client"
                        && f.arity == 3 =>
                {
                    // With no net_kernel:allow/1 list, OTP's verify_client/3 accepts exactly
                    // what verify_peer accepts; this node has no such list.
                    self.note(
                        side,
                        name,
                        false,
                        "inet_tls_dist:verify_client/3 with no net_kernel:allow/1 list: the same check as verify_peer",
                    );
                    Ok(())
                }
                _ => Err(OptionsError::Value {
                    side,
                    option: name.to_string(),
                    message: format!(
                        "{fun:?} is Erlang code, which this node cannot run; remove the option \
                         for this node's file (only inet_tls_dist:verify_client/3 is understood)"
                    ),
                }),
            },
            _ => Err(OptionsError::Value {
                side,
                option: name.to_string(),
                message: expected("{fun Module:Function/Arity, InitialState}", value),
            }),
        }
    }
}

enum CipherEntry {
    Name(String),
    /// `{key_exchange, cipher}`, and the entry as written.
    Spec((String, String), String),
}

fn expected(what: &str, got: &Value) -> String {
    format!("expected {what}, got {got:?}")
}

/// A string: a list of character codes or a binary.
fn text(value: &Value) -> Option<String> {
    if let Some(bytes) = value.as_bytes() {
        return String::from_utf8(bytes.to_vec()).ok();
    }
    value
        .as_list()?
        .iter()
        .map(|c| c.as_int().and_then(|c| char::from_u32(c as u32)))
        .collect()
}

fn path(value: &Value) -> Option<PathBuf> {
    text(value).filter(|p| !p.is_empty()).map(PathBuf::from)
}

fn boolean(value: &Value) -> Option<bool> {
    match value.as_atom()?.as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn der_list(value: &Value) -> Option<Vec<CertificateDer<'static>>> {
    if let Some(bytes) = value.as_bytes() {
        return Some(vec![CertificateDer::from(bytes.to_vec())]);
    }
    value
        .as_list()?
        .iter()
        .map(|v| v.as_bytes().map(|b| CertificateDer::from(b.to_vec())))
        .collect()
}

/// `{'RSAPrivateKey' | 'ECPrivateKey' | 'PrivateKeyInfo', Der}`.
fn key(value: &Value) -> Option<PrivateKeyDer<'static>> {
    match value.as_tuple()? {
        [kind, der] => {
            let der = der.as_bytes()?.to_vec();
            Some(match kind.as_atom()?.as_str() {
                "RSAPrivateKey" => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
                "ECPrivateKey" => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
                "PrivateKeyInfo" => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
                _ => return None,
            })
        }
        _ => None,
    }
}

/// OTP's map (`#{key_exchange => K, cipher => C, ...}`) or tuple (`{K, C, Mac}`,
/// `{K, C, Mac, Prf}`) form of a cipher suite: its key exchange and cipher.
fn cipher_key(value: &Value) -> Option<(String, String)> {
    if value.as_map().is_some() {
        let get = |k: &'static str| {
            value
                .map_get_atom(crate::term::Atom::from_static(k))
                .and_then(|v| v.as_atom())
                .map(|a| a.as_str().to_string())
        };
        return Some((get("key_exchange")?, get("cipher")?));
    }
    match value.as_tuple()? {
        [k, c, ..] => Some((
            k.as_atom()?.as_str().to_string(),
            c.as_atom()?.as_str().to_string(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OptFile, OptionsError> {
        OptFile::parse(text)
    }

    #[test]
    fn reads_otps_documented_examples() {
        // The examples of OTP's "Using SSL for Erlang Distribution" guide.
        let f = parse(
            r#"[{server,
                 [{certfile, "/home/me/ssl/erlserver.pem"},
                  {secure_renegotiate, true}]},
                {client,
                 [{secure_renegotiate, true}]}]."#,
        )
        .unwrap();
        let server = f.server.unwrap();
        assert_eq!(
            server.certfile.as_deref(),
            Some(Path::new("/home/me/ssl/erlserver.pem"))
        );
        assert_eq!(server.notes.len(), 1);
        assert_eq!(server.notes[0].option, "secure_renegotiate");
        assert!(f.client.unwrap().certfile.is_none());

        let f = parse(
            r#"[{server,[{fail_if_no_peer_cert,true},
                         {certfile,"/home/me/ssl/cert.pem"},
                         {keyfile,"/home/me/ssl/privkey.pem"},
                         {cacertfile,"/home/me/ssl/ca_cert.pem"},
                         {verify,verify_peer},
                         {verify_fun,{fun inet_tls_dist:verify_client/3,[]}}]},
                {client,[{certfile,"/home/me/ssl/cert.pem"},
                         {keyfile,"/home/me/ssl/privkey.pem"},
                         {cacertfile,"/home/me/ssl/ca_cert.pem"},
                         {verify,verify_peer},
                         {server_name_indication, disable},
                         {customize_hostname_check, [{match_fun, fun public_key:pkix_verify_hostname_match_fun/1}]}]}]."#,
        )
        .unwrap();
        let server = f.server.unwrap();
        assert_eq!(server.verify, Some(Verify::Peer));
        assert_eq!(server.fail_if_no_peer_cert, Some(true));
        assert_eq!(
            server.cacertfile.as_deref(),
            Some(Path::new("/home/me/ssl/ca_cert.pem"))
        );
        assert_eq!(server.notes[0].option, "verify_fun");
        let client = f.client.unwrap();
        assert_eq!(
            client.server_name_indication,
            Some(ServerNameIndication::Disable)
        );
        assert!(
            client
                .notes
                .iter()
                .any(|n| n.option == "customize_hostname_check" && n.warn)
        );
    }

    #[test]
    fn reads_every_mapped_option() {
        let f = parse(
            r#"% comment
            [{server, [{certfile, <<"c.pem">>}, {keyfile, "k.pem"}, {password, "pw"},
                       {cacertfile, "ca.pem"}, {verify, verify_none}, {depth, 3},
                       {versions, ['tlsv1.3', 'tlsv1.2', 'tlsv1.1']},
                       {ciphers, "ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256:DES-CBC3-SHA"},
                       {honor_cipher_order, true}, {reuse_sessions, false},
                       {crl_check, false}, {hibernate_after, 1000}]},
             {client, [{ciphers, [#{key_exchange => ecdhe_rsa, cipher => aes_256_gcm, mac => aead, prf => sha384},
                                  {any, chacha20_poly1305, aead, sha256}, "TLS_AES_256_GCM_SHA384"]},
                       {server_name_indication, "node.example"}, {reuse_sessions, save},
                       {key, {'PrivateKeyInfo', <<1,2,3>>}}, {cert, <<4,5>>}, {cacerts, [<<6>>]}]}]"#,
        )
        .unwrap();
        let s = f.server.unwrap();
        assert_eq!(s.certfile.as_deref(), Some(Path::new("c.pem")));
        assert_eq!(s.keyfile.as_deref(), Some(Path::new("k.pem")));
        assert!(s.password);
        assert_eq!(s.verify, Some(Verify::None));
        assert_eq!(s.depth, Some(3));
        assert_eq!(s.versions, Some(vec![TlsVersion::Tls13, TlsVersion::Tls12]));
        assert_eq!(
            s.ciphers,
            Some(vec![
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS13_AES_128_GCM_SHA256
            ])
        );
        assert_eq!(s.honor_cipher_order, Some(true));
        assert_eq!(s.reuse_sessions, Some(false));
        let options: Vec<&str> = s.notes.iter().map(|n| n.option.as_str()).collect();
        // depth, the old version, the unknown cipher, hibernate_after; not crl_check false.
        assert_eq!(options, ["depth", "versions", "ciphers", "hibernate_after"]);
        assert!(s.notes[2].text.contains("DES-CBC3-SHA"));

        let c = f.client.unwrap();
        assert_eq!(
            c.ciphers,
            Some(vec![
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384
            ])
        );
        assert_eq!(
            c.server_name_indication,
            Some(ServerNameIndication::Host("node.example".into()))
        );
        assert_eq!(c.reuse_sessions, Some(true));
        assert!(matches!(c.key, Some(PrivateKeyDer::Pkcs8(_))));
        assert_eq!(c.cert.len(), 1);
        assert_eq!(c.cacerts.len(), 1);
    }

    #[test]
    fn certs_keys_gives_one_pair() {
        let f =
            parse(r#"[{server, [{certs_keys, [#{certfile => "a.pem", keyfile => "b.pem"}]}]}]"#)
                .unwrap();
        let s = f.server.unwrap();
        assert_eq!(s.certfile.as_deref(), Some(Path::new("a.pem")));
        assert_eq!(s.keyfile.as_deref(), Some(Path::new("b.pem")));
        let two = parse(
            r#"[{server, [{certs_keys, [#{certfile => "a.pem"}, #{certfile => "b.pem"}]}]}]"#,
        )
        .unwrap_err();
        assert!(two.to_string().contains("2 certificate/key pairs"), "{two}");
    }

    #[test]
    fn unknown_options_are_named() {
        let e = parse(r#"[{server, [{certfile, "a"}, {no_such_thing, 1}, {other, x}, binary]}]"#)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown server options: no_such_thing, other, binary"
        );
        let e = parse(r#"[{client, [{sndbuf, 1}]}]"#).unwrap_err();
        assert_eq!(e.to_string(), "unknown client option: sndbuf");
    }

    #[test]
    fn bad_values_and_shapes_are_errors() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(
            err(r#"[{server, [{verify, yes}]}]"#),
            "server option verify: expected verify_peer or verify_none, got yes"
        );
        assert!(err(r#"[{server, [{versions, ['tlsv1.1']}]}]"#).contains("none of tlsv1.1"));
        assert!(err(r#"[{server, [{versions, [tls9]}]}]"#).contains("unknown version tls9"));
        assert!(err(r#"[{client, [{ciphers, "RC4-MD5"}]}]"#).contains("none of the cipher suites"));
        assert!(err(r#"[{client, [{depth, -1}]}]"#).contains("depth"));
        assert!(err(r#"[{client, [{certfile, 12}]}]"#).contains("expected a file name"));
        assert!(
            err(r#"[{client, [{verify_fun, {fun mydist:verify/3, "any initial value"}}]}]"#)
                .contains("cannot run")
        );
        assert!(err(r#"[{server, []}, {server, []}]"#).contains("two server sections"));
        assert!(err(r#"[{other, []}]"#).contains("section named other"));
        assert!(err(r#"#{server => []}"#).starts_with("expected [{server"));
        assert!(err(r#"[{server, [{certfile, "a"}"#).starts_with("not an Erlang term"));
    }

    #[test]
    fn side_specific_options_on_the_wrong_side_are_noted() {
        let f = parse(
            r#"[{server, [{server_name_indication, disable}]},
                {client, [{fail_if_no_peer_cert, true}, {honor_cipher_order, false}]}]"#,
        )
        .unwrap();
        let s = f.server.unwrap();
        assert!(s.server_name_indication.is_none());
        assert_eq!(s.notes[0].option, "server_name_indication");
        let c = f.client.unwrap();
        assert!(c.fail_if_no_peer_cert.is_none());
        assert_eq!(c.notes.len(), 2);
    }

    #[test]
    fn read_reports_a_missing_file() {
        let e = OptFile::read(Path::new("/nonexistent/ssl_dist.conf")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/ssl_dist.conf:")
        );
    }
}
