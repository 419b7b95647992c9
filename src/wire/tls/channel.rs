//! A TLS connection after its handshakes: the rustls state beside the plain socket.
//!
//! The connection keeps the plain path's shape: its reader reads the socket without waiting
//! (and busy-polls it), and replies are written with non-blocking writes at the end of a batch.
//! So instead of an async TLS stream, the rustls state sits behind a lock next to the tokio
//! socket: [`TlsChannel::feed`] decrypts what the reader read into the frame buffer, and
//! [`TlsChannel::push`] encrypts what is queued and writes as much as the socket takes now; the
//! rest stays in rustls (in order) until the socket is writable again.

use crate::wire::frame::FrameReader;
use parking_lot::Mutex;
use std::io::{self, Read, Write};
use tokio::net::TcpStream;

/// What [`TlsChannel::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// The connection goes on.
    Open,
    /// The peer closed the TLS session (`close_notify`).
    Closed,
}

/// Why a TLS connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The peer broke the TLS protocol (or sent an alert).
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
    /// Reading the decrypted bytes failed.
    #[error("TLS read failed: {0}")]
    Io(#[from] io::Error),
}

/// The rustls state of one connection.
pub struct TlsChannel {
    conn: Mutex<rustls::Connection>,
    /// Negotiated version and cipher suite, for the log.
    pub description: String,
}

impl TlsChannel {
    /// Takes over the rustls state of a finished handshake (with whatever it already
    /// buffered: the first frames may have arrived with the handshake's last bytes).
    pub fn new(conn: impl Into<rustls::Connection>) -> TlsChannel {
        let mut conn: rustls::Connection = conn.into();
        // The outbox of the connection bounds nothing either: what is queued gets written.
        conn.set_buffer_limit(None);
        let description = match (conn.protocol_version(), conn.negotiated_cipher_suite()) {
            (Some(v), Some(s)) => format!("{v:?} {:?}", s.suite()),
            _ => "TLS".to_string(),
        };
        TlsChannel {
            conn: Mutex::new(conn),
            description,
        }
    }

    /// Splits a finished server-side TLS stream into its socket and its rustls state.
    pub fn from_server(
        stream: tokio_rustls::server::TlsStream<TcpStream>,
    ) -> (TcpStream, TlsChannel) {
        let (socket, conn) = stream.into_inner();
        (socket, TlsChannel::new(conn))
    }

    /// Splits a finished client-side TLS stream into its socket and its rustls state.
    pub fn from_client(
        stream: tokio_rustls::client::TlsStream<TcpStream>,
    ) -> (TcpStream, TlsChannel) {
        let (socket, conn) = stream.into_inner();
        (socket, TlsChannel::new(conn))
    }

    /// Decrypts `data` (bytes just read from the socket; may be empty, to pick up what rustls
    /// holds already) and appends the plaintext to `frames`.
    pub fn feed(&self, mut data: &[u8], frames: &mut FrameReader) -> Result<Fed, ChannelError> {
        let mut conn = self.conn.lock();
        loop {
            conn.process_new_packets()?;
            loop {
                match conn.reader().read(frames.read_space()) {
                    Ok(0) => return Ok(Fed::Closed),
                    Ok(n) => frames.filled(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if data.is_empty() {
                return Ok(Fed::Open);
            }
            // At most a record's worth at a time; the plaintext is drained in between.
            conn.read_tls(&mut data)?;
        }
    }

    /// Encrypts `plaintext` (may be empty) and writes what rustls holds to `socket` without
    /// waiting. Returns whether everything went out; if not, call again once the socket is
    /// writable.
    pub fn push(&self, plaintext: &[u8], socket: &TcpStream) -> io::Result<bool> {
        let mut conn = self.conn.lock();
        if !plaintext.is_empty() {
            // No buffer limit: this takes everything.
            conn.writer().write_all(plaintext)?;
        }
        while conn.wants_write() {
            match conn.write_tls(&mut TryWrite(socket)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Whether rustls holds bytes to write (an alert, a key update, unwritten records).
    pub fn wants_write(&self) -> bool {
        self.conn.lock().wants_write()
    }

    /// Sends `close_notify`, as far as the socket takes it now.
    pub fn close(&self, socket: &TcpStream) {
        self.conn.lock().send_close_notify();
        let _ = self.push(&[], socket);
    }
}

/// Writes to a tokio socket without waiting (`WouldBlock` when it is full).
struct TryWrite<'a>(&'a TcpStream);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
