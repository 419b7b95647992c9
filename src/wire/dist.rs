//! Distribution operations: the control messages of a connected channel, decoded and encoded
//! with this node's own term codec ([`super::etf`]).
//!
//! `erl_dist` does the EPMD and handshake work; for the messages of a live connection the node
//! uses its own types, because every call crosses this code twice and `erl_dist`'s messages are
//! built from `eetf` term trees (a string per atom, a vector per tuple, a hash map per map). The
//! control message is a tuple whose first element is the operation number; operations that
//! carry a message or an exit reason have it as a second term. The tests check this against
//! `erl_dist`'s own encoder.

use super::atom_cache::OutCache;
use super::etf::{self, DecodeError, TermWriter};
use super::limits::Limits;
use crate::term::{Atom, Pid, Ref, Value, atoms};

/// The operation numbers of distribution control messages (the first element of the control
/// tuple), as the Erlang distribution protocol names them.
pub mod op {
    #![allow(missing_docs)]
    pub const LINK: i64 = 1;
    pub const SEND: i64 = 2;
    pub const EXIT: i64 = 3;
    pub const UNLINK: i64 = 4;
    pub const NODE_LINK: i64 = 5;
    pub const REG_SEND: i64 = 6;
    pub const GROUP_LEADER: i64 = 7;
    pub const EXIT2: i64 = 8;
    pub const SEND_TT: i64 = 12;
    pub const EXIT_TT: i64 = 13;
    pub const REG_SEND_TT: i64 = 16;
    pub const EXIT2_TT: i64 = 18;
    pub const MONITOR_P: i64 = 19;
    pub const DEMONITOR_P: i64 = 20;
    pub const MONITOR_P_EXIT: i64 = 21;
    pub const SEND_SENDER: i64 = 22;
    pub const SEND_SENDER_TT: i64 = 23;
    pub const PAYLOAD_EXIT: i64 = 24;
    pub const PAYLOAD_EXIT_TT: i64 = 25;
    pub const PAYLOAD_EXIT2: i64 = 26;
    pub const PAYLOAD_EXIT2_TT: i64 = 27;
    pub const PAYLOAD_MONITOR_P_EXIT: i64 = 28;
    pub const SPAWN_REQUEST: i64 = 29;
    pub const SPAWN_REQUEST_TT: i64 = 30;
    pub const SPAWN_REPLY: i64 = 31;
    pub const SPAWN_REPLY_TT: i64 = 32;
    pub const ALIAS_SEND: i64 = 33;
    pub const ALIAS_SEND_TT: i64 = 34;
    pub const UNLINK_ID: i64 = 35;
    pub const UNLINK_ID_ACK: i64 = 36;
}

/// A process named by pid or by registered name.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcRef {
    /// By pid.
    Pid(Pid),
    /// By registered name.
    Name(Atom),
}

/// One incoming distribution operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// `SEND`, `SEND_TT`, `SEND_SENDER`, `SEND_SENDER_TT`: a message to a pid.
    Send {
        /// The sender, when the operation carries it.
        from: Option<Pid>,
        /// The receiver.
        to: Pid,
        /// The message.
        message: Value,
    },
    /// `REG_SEND`, `REG_SEND_TT`: a message to a registered name.
    RegSend {
        /// The sender.
        from: Pid,
        /// The name.
        to: Atom,
        /// The message.
        message: Value,
    },
    /// `ALIAS_SEND`, `ALIAS_SEND_TT`: a message to an alias.
    AliasSend {
        /// The sender.
        from: Pid,
        /// The alias.
        alias: Ref,
        /// The message.
        message: Value,
    },
    /// `LINK`.
    Link {
        /// The linking process.
        from: Pid,
        /// The process linked to.
        to: Pid,
    },
    /// `UNLINK` (no id) and `UNLINK_ID`.
    Unlink {
        /// The unlink id to acknowledge, if any.
        id: Option<Value>,
        /// The unlinking process.
        from: Pid,
        /// The process unlinked from.
        to: Pid,
    },
    /// `UNLINK_ID_ACK`.
    UnlinkAck,
    /// `EXIT`/`EXIT_TT`/`PAYLOAD_EXIT`/`PAYLOAD_EXIT_TT` (a link broke, `link` is true) and
    /// `EXIT2`/`EXIT2_TT`/`PAYLOAD_EXIT2`/`PAYLOAD_EXIT2_TT` (`exit/2`).
    Exit {
        /// Who exited, or who sent the signal.
        from: Pid,
        /// The receiver.
        to: Pid,
        /// The exit reason.
        reason: Value,
        /// Whether the signal travels along a link.
        link: bool,
    },
    /// `MONITOR_P`.
    Monitor {
        /// The monitoring process.
        from: Pid,
        /// The monitored process.
        to: ProcRef,
        /// The monitor reference.
        reference: Ref,
    },
    /// `DEMONITOR_P`.
    Demonitor {
        /// The monitoring process.
        from: Pid,
        /// The monitored process.
        to: ProcRef,
        /// The monitor reference.
        reference: Ref,
    },
    /// `MONITOR_P_EXIT`, `PAYLOAD_MONITOR_P_EXIT`: a monitored process died.
    MonitorExit {
        /// The process that died.
        from: ProcRef,
        /// The monitoring (local) process.
        to: Pid,
        /// The monitor reference.
        reference: Ref,
        /// Why it died.
        reason: Value,
    },
    /// `SPAWN_REQUEST`, `SPAWN_REQUEST_TT`.
    SpawnRequest {
        /// The request id.
        req_id: Ref,
        /// The requesting process.
        from: Pid,
    },
    /// An operation the node has no use for (`NODE_LINK`, `GROUP_LEADER`, `SPAWN_REPLY`...).
    Ignored(i64),
}

/// An incoming frame.
#[derive(Debug)]
pub enum Frame {
    /// A keep-alive tick.
    Tick,
    /// A decoded operation.
    Control(Box<Control>),
    /// An operation whose terms exceed a limit (nest too deeply, say), with the offending parts
    /// cut off (see [`etf::decode_limited`]): enough to tell the sender. The reason is one of
    /// [`etf::TOO_DEEP_REASON`], [`etf::TOO_LONG_REASON`], [`etf::BIGNUM_REASON`].
    OverLimit(Box<Control>, &'static str),
    /// A well-framed message this node could not decode (malformed terms, or a control message
    /// of the wrong shape): the peer is broken, and the connection is closed.
    Undecodable(String),
}

fn bad(reason: String) -> DecodeError {
    DecodeError { offset: 0, reason }
}

fn pid(v: &Value, what: &str) -> Result<Pid, DecodeError> {
    v.as_pid()
        .copied()
        .ok_or_else(|| bad(format!("{what} must be a pid, got {v:?}")))
}

fn reference(v: &Value, what: &str) -> Result<Ref, DecodeError> {
    match v {
        Value::Ref(r) => Ok(**r),
        _ => Err(bad(format!("{what} must be a reference, got {v:?}"))),
    }
}

fn proc_ref(v: &Value) -> Result<ProcRef, DecodeError> {
    match v {
        Value::Pid(p) => Ok(ProcRef::Pid(**p)),
        Value::Atom(a) => Ok(ProcRef::Name(*a)),
        _ => Err(bad(format!("a process must be a pid or a name, got {v:?}"))),
    }
}

/// Decodes the terms of a frame: a control message and maybe its payload. Without a
/// distribution header each term starts with the version byte (`refs` is `None`); after one, none
/// does and atoms may be references into the header's list `refs`. Default [`Limits`].
pub fn decode(bytes: &[u8], refs: Option<&[Atom]>) -> Result<Control, DecodeError> {
    decode_limited(bytes, refs, false, &Limits::default())
}

/// Decodes a frame [`decode`] refused as too deep, cutting the deep parts off.
pub fn decode_truncated(bytes: &[u8], refs: Option<&[Atom]>) -> Result<Control, DecodeError> {
    decode_limited(bytes, refs, true, &Limits::default())
}

/// Decodes the terms of a frame within `limits`; with `truncate`, terms over a limit are cut
/// off (see [`etf::decode_limited`]) instead of failing.
pub fn decode_limited(
    bytes: &[u8],
    refs: Option<&[Atom]>,
    truncate: bool,
    limits: &Limits,
) -> Result<Control, DecodeError> {
    let term = |bytes: &[u8]| etf::decode_limited(bytes, refs, truncate, limits);
    // Most messages are calls to a registered name: read their control message directly.
    if let Some((from, to, used)) = etf::name_send_control(bytes, refs, op::REG_SEND as u8)
        && used < bytes.len()
    {
        let (message, used2) = term(&bytes[used..]).map_err(|e| DecodeError {
            offset: used + e.offset,
            reason: e.reason,
        })?;
        if used + used2 != bytes.len() {
            return Err(bad("trailing bytes after the payload".into()));
        }
        return Ok(Control::RegSend { from, to, message });
    }
    let (control, used) = term(bytes)?;
    let payload = if used < bytes.len() {
        let (payload, used2) = term(&bytes[used..]).map_err(|e| DecodeError {
            offset: used + e.offset,
            reason: e.reason,
        })?;
        if used + used2 != bytes.len() {
            return Err(bad("trailing bytes after the payload".into()));
        }
        Some(payload)
    } else {
        None
    };
    let items = control
        .as_tuple()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            bad(format!(
                "a control message must be a tuple, got {control:?}"
            ))
        })?;
    let op = items[0]
        .as_int()
        .ok_or_else(|| bad(format!("unknown control message {control:?}")))?;
    let arity = |n: usize| -> Result<(), DecodeError> {
        if items.len() == n {
            Ok(())
        } else {
            Err(bad(format!(
                "operation {op} needs {n} elements, got {control:?}"
            )))
        }
    };
    // Each operation takes the payload at most once: moved out, not copied.
    let payload = std::cell::Cell::new(payload);
    let payload = |what: &str| -> Result<Value, DecodeError> {
        payload
            .take()
            .ok_or_else(|| bad(format!("operation {op} lacks its {what}")))
    };
    Ok(match op {
        op::SEND | op::SEND_TT => {
            arity(if op == op::SEND { 3 } else { 4 })?;
            Control::Send {
                from: None,
                to: pid(&items[2], "SEND receiver")?,
                message: payload("message")?,
            }
        }
        op::SEND_SENDER | op::SEND_SENDER_TT => {
            arity(if op == op::SEND_SENDER { 3 } else { 4 })?;
            Control::Send {
                from: Some(pid(&items[1], "sender")?),
                to: pid(&items[2], "receiver")?,
                message: payload("message")?,
            }
        }
        op::REG_SEND | op::REG_SEND_TT => {
            arity(if op == op::REG_SEND { 4 } else { 5 })?;
            Control::RegSend {
                from: pid(&items[1], "sender")?,
                to: items[3]
                    .as_atom()
                    .ok_or_else(|| bad(format!("REG_SEND name must be an atom: {control:?}")))?,
                message: payload("message")?,
            }
        }
        op::ALIAS_SEND | op::ALIAS_SEND_TT => {
            arity(if op == op::ALIAS_SEND { 3 } else { 4 })?;
            Control::AliasSend {
                from: pid(&items[1], "sender")?,
                alias: reference(&items[2], "alias")?,
                message: payload("message")?,
            }
        }
        op::LINK => {
            arity(3)?;
            Control::Link {
                from: pid(&items[1], "linker")?,
                to: pid(&items[2], "linked")?,
            }
        }
        op::UNLINK => {
            arity(3)?;
            Control::Unlink {
                id: None,
                from: pid(&items[1], "unlinker")?,
                to: pid(&items[2], "unlinked")?,
            }
        }
        op::UNLINK_ID => {
            arity(4)?;
            Control::Unlink {
                id: Some(items[1].clone()),
                from: pid(&items[2], "unlinker")?,
                to: pid(&items[3], "unlinked")?,
            }
        }
        op::UNLINK_ID_ACK => Control::UnlinkAck,
        op::EXIT | op::EXIT2 => {
            arity(4)?;
            Control::Exit {
                from: pid(&items[1], "exiting process")?,
                to: pid(&items[2], "receiver")?,
                reason: items[3].clone(),
                link: op == op::EXIT,
            }
        }
        op::EXIT_TT | op::EXIT2_TT => {
            arity(5)?;
            Control::Exit {
                from: pid(&items[1], "exiting process")?,
                to: pid(&items[2], "receiver")?,
                reason: items[4].clone(),
                link: op == op::EXIT_TT,
            }
        }
        op::PAYLOAD_EXIT..=op::PAYLOAD_EXIT2_TT => {
            arity(if op == op::PAYLOAD_EXIT || op == op::PAYLOAD_EXIT2 {
                3
            } else {
                4
            })?;
            Control::Exit {
                from: pid(&items[1], "exiting process")?,
                to: pid(&items[2], "receiver")?,
                reason: payload("reason")?,
                link: op == op::PAYLOAD_EXIT || op == op::PAYLOAD_EXIT_TT,
            }
        }
        op::MONITOR_P | op::DEMONITOR_P => {
            arity(4)?;
            let (from, to, reference) = (
                pid(&items[1], "monitoring process")?,
                proc_ref(&items[2])?,
                reference(&items[3], "monitor reference")?,
            );
            if op == op::MONITOR_P {
                Control::Monitor {
                    from,
                    to,
                    reference,
                }
            } else {
                Control::Demonitor {
                    from,
                    to,
                    reference,
                }
            }
        }
        op::MONITOR_P_EXIT | op::PAYLOAD_MONITOR_P_EXIT => {
            arity(if op == op::MONITOR_P_EXIT { 5 } else { 4 })?;
            Control::MonitorExit {
                from: proc_ref(&items[1])?,
                to: pid(&items[2], "monitoring process")?,
                reference: reference(&items[3], "monitor reference")?,
                reason: if op == op::MONITOR_P_EXIT {
                    items[4].clone()
                } else {
                    payload("reason")?
                },
            }
        }
        op::SPAWN_REQUEST | op::SPAWN_REQUEST_TT => Control::SpawnRequest {
            req_id: reference(items.get(1).unwrap_or(&Value::nil()), "spawn request id")?,
            from: pid(items.get(2).unwrap_or(&Value::nil()), "spawning process")?,
        },
        other => Control::Ignored(other),
    })
}

/// Encodes a connection's outgoing frames, through the atom cache when the peer agreed to it.
pub struct FrameWriter {
    /// Encoded frames not yet written to the socket.
    pub buf: Vec<u8>,
    cache: Option<Box<OutCache>>,
    scratch: Vec<u8>,
}

impl FrameWriter {
    /// A writer for a connection that negotiated the atom cache (`atom_cache`) or not.
    pub fn new(atom_cache: bool) -> FrameWriter {
        FrameWriter {
            buf: Vec::new(),
            cache: atom_cache.then(Box::default),
            scratch: Vec::new(),
        }
    }

    /// Whether frames go through the atom cache.
    pub fn atom_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// A tick (an empty frame).
    pub fn tick(&mut self) {
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
    }

    /// One frame: the control message `control` writes and, if `payload` is given, the term it
    /// writes.
    fn frame(
        &mut self,
        control: &mut dyn FnMut(&mut TermWriter),
        payload: Option<&mut dyn FnMut(&mut TermWriter)>,
    ) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        match self.cache.as_deref_mut() {
            None => {
                self.buf.push(112);
                self.buf.push(131);
                control(&mut TermWriter::plain(&mut self.buf));
                if let Some(payload) = payload {
                    self.buf.push(131);
                    payload(&mut TermWriter::plain(&mut self.buf));
                }
            }
            Some(cache) => {
                // The header lists the atoms the terms use, so the terms are written first.
                let mut refs = cache.message();
                self.scratch.clear();
                {
                    let mut w = TermWriter::cached(&mut self.scratch, &mut refs);
                    control(&mut w);
                    if let Some(payload) = payload {
                        payload(&mut w);
                    }
                }
                refs.write_header(&mut self.buf);
                self.buf.extend_from_slice(&self.scratch);
            }
        }
        let len = (self.buf.len() - start - 4) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// A frame whose control message is the term `control`, without payload.
    fn control_frame(&mut self, control: &Value) {
        self.frame(&mut |w| w.term(control), None);
    }

    /// `SEND` to `to`; `payload` writes the message. The control tuple is written as it goes
    /// (these three carry every reply and call), without building it as a term first.
    pub fn send(&mut self, to: &Pid, mut payload: impl FnMut(&mut TermWriter)) {
        let mut control = |w: &mut TermWriter| {
            w.tuple_header(3);
            w.int(op::SEND);
            w.atom(*atoms::EMPTY);
            w.pid(to);
        };
        self.frame(&mut control, Some(&mut payload));
    }

    /// `ALIAS_SEND` from `from` to `alias`; `payload` writes the message.
    pub fn alias_send(
        &mut self,
        from: &Pid,
        alias: &Ref,
        mut payload: impl FnMut(&mut TermWriter),
    ) {
        let mut control = |w: &mut TermWriter| {
            w.tuple_header(3);
            w.int(op::ALIAS_SEND);
            w.pid(from);
            w.reference(alias);
        };
        self.frame(&mut control, Some(&mut payload));
    }

    /// `REG_SEND` from `from` to the name `to`; `payload` writes the message.
    pub fn reg_send(&mut self, from: &Pid, to: Atom, mut payload: impl FnMut(&mut TermWriter)) {
        let mut control = |w: &mut TermWriter| {
            w.tuple_header(4);
            w.int(op::REG_SEND);
            w.pid(from);
            w.atom(*atoms::EMPTY);
            w.atom(to);
        };
        self.frame(&mut control, Some(&mut payload));
    }

    /// `MONITOR_P_EXIT`: `from` died (or never existed) with `reason`.
    pub fn monitor_exit(&mut self, from: &ProcRef, to: &Pid, reference: &Ref, reason: &Value) {
        let control = Value::tuple(vec![
            op_value(op::MONITOR_P_EXIT),
            proc_value(from),
            pid_value(to),
            ref_value(reference),
            reason.clone(),
        ]);
        self.control_frame(&control);
    }

    /// `EXIT`: the link between `from` and `to` broke because `from` exited with `reason`.
    pub fn exit(&mut self, from: &Pid, to: &Pid, reason: &Value) {
        let control = Value::tuple(vec![
            op_value(op::EXIT),
            pid_value(from),
            pid_value(to),
            reason.clone(),
        ]);
        self.control_frame(&control);
    }

    /// `MONITOR_P` from a local process.
    pub fn monitor(&mut self, from: &Pid, to: &ProcRef, reference: &Ref) {
        let control = Value::tuple(vec![
            op_value(op::MONITOR_P),
            pid_value(from),
            proc_value(to),
            ref_value(reference),
        ]);
        self.control_frame(&control);
    }

    /// `DEMONITOR_P` from a local process.
    pub fn demonitor(&mut self, from: &Pid, to: &ProcRef, reference: &Ref) {
        let control = Value::tuple(vec![
            op_value(op::DEMONITOR_P),
            pid_value(from),
            proc_value(to),
            ref_value(reference),
        ]);
        self.control_frame(&control);
    }

    /// `LINK` from `from` to `to`.
    pub fn link(&mut self, from: &Pid, to: &Pid) {
        let control = Value::tuple(vec![op_value(op::LINK), pid_value(from), pid_value(to)]);
        self.control_frame(&control);
    }

    /// `UNLINK_ID_ACK`.
    pub fn unlink_ack(&mut self, id: &Value, from: &Pid, to: &Pid) {
        let control = Value::tuple(vec![
            op_value(op::UNLINK_ID_ACK),
            id.clone(),
            pid_value(from),
            pid_value(to),
        ]);
        self.control_frame(&control);
    }

    /// `SPAWN_REPLY` refusing a spawn request with `reason`.
    pub fn spawn_refused(&mut self, req_id: &Ref, to: &Pid, reason: Atom) {
        let control = Value::tuple(vec![
            op_value(op::SPAWN_REPLY),
            ref_value(req_id),
            pid_value(to),
            Value::Int(0), // flags
            Value::Atom(reason),
        ]);
        self.control_frame(&control);
    }
}

fn op_value(n: i64) -> Value {
    Value::Int(n)
}

fn pid_value(p: &Pid) -> Value {
    Value::Pid(Box::new(*p))
}

fn ref_value(r: &Ref) -> Value {
    Value::Ref(Box::new(*r))
}

fn proc_value(p: &ProcRef) -> Value {
    match p {
        ProcRef::Pid(pid) => pid_value(pid),
        ProcRef::Name(name) => Value::Atom(*name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use erl_dist::message::Message;
    use erl_dist::term::PidOrAtom;

    fn via_erl_dist(message: Message) -> Control {
        let mut bytes = Vec::new();
        message.write_into(&mut bytes).unwrap();
        decode(&bytes, None).unwrap()
    }

    fn our_pid(p: &eetf::Pid) -> Pid {
        Pid::from_eetf(p).unwrap()
    }

    #[test]
    fn decodes_what_erl_dist_encodes() {
        let a = eetf::Pid::new("a@h", 1, 0, 5);
        let b = eetf::Pid::new("b@h", 2, 0, 6);
        let r = eetf::Reference::from(("a@h", vec![7, 8, 9]));
        let hello = eetf::Term::from(eetf::Atom::from("hello"));
        let hello_v = Value::Atom(Atom::new("hello").unwrap());

        assert_eq!(
            via_erl_dist(Message::send(b.clone(), hello.clone())),
            Control::Send {
                from: None,
                to: our_pid(&b),
                message: hello_v.clone()
            }
        );
        assert_eq!(
            via_erl_dist(Message::send_sender(a.clone(), b.clone(), hello.clone())),
            Control::Send {
                from: Some(our_pid(&a)),
                to: our_pid(&b),
                message: hello_v.clone()
            }
        );
        assert_eq!(
            via_erl_dist(Message::reg_send(
                a.clone(),
                eetf::Atom::from("srv"),
                hello.clone()
            )),
            Control::RegSend {
                from: our_pid(&a),
                to: Atom::new("srv").unwrap(),
                message: hello_v.clone()
            }
        );
        assert_eq!(
            via_erl_dist(Message::alias_send(a.clone(), r.clone(), hello.clone())),
            Control::AliasSend {
                from: our_pid(&a),
                alias: Ref::from_eetf(&r).unwrap(),
                message: hello_v.clone()
            }
        );
        assert_eq!(
            via_erl_dist(Message::monitor_p(
                a.clone(),
                PidOrAtom::Atom(eetf::Atom::from("srv")),
                r.clone()
            )),
            Control::Monitor {
                from: our_pid(&a),
                to: ProcRef::Name(Atom::new("srv").unwrap()),
                reference: Ref::from_eetf(&r).unwrap()
            }
        );
        assert_eq!(
            via_erl_dist(Message::payload_exit(a.clone(), b.clone(), hello.clone())),
            Control::Exit {
                from: our_pid(&a),
                to: our_pid(&b),
                reason: hello_v.clone(),
                link: true
            }
        );
        assert_eq!(
            via_erl_dist(Message::exit2(a.clone(), b.clone(), hello.clone())),
            Control::Exit {
                from: our_pid(&a),
                to: our_pid(&b),
                reason: hello_v.clone(),
                link: false
            }
        );
        assert_eq!(
            via_erl_dist(Message::unlink_id(
                eetf::Term::from(eetf::FixInteger::from(3)),
                a.clone(),
                b.clone()
            )),
            Control::Unlink {
                id: Some(Value::Int(3)),
                from: our_pid(&a),
                to: our_pid(&b)
            }
        );
        assert_eq!(via_erl_dist(Message::node_link()), Control::Ignored(5));
    }

    #[test]
    fn erl_dist_decodes_what_we_encode() {
        let a = Pid {
            node: Atom::new("a@h").unwrap(),
            id: 1,
            serial: 0,
            creation: 5,
        };
        let b = Pid {
            node: Atom::new("b@h").unwrap(),
            id: 2,
            serial: 0,
            creation: 6,
        };
        let r = Ref::new(Atom::new("a@h").unwrap(), 5, &[1, 2, 3]);
        let mut out = FrameWriter::new(false);
        out.send(&b, |w| w.term(&Value::Int(42)));
        out.monitor_exit(
            &ProcRef::Pid(a),
            &b,
            &r,
            &Value::Atom(Atom::new("noproc").unwrap()),
        );
        out.exit(&a, &b, &Value::Atom(Atom::new("normal").unwrap()));
        out.alias_send(&a, &r, |w| w.term(&Value::Int(1)));
        let mut rest = &out.buf[..];
        let mut decoded = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            assert_eq!(rest[4], 112);
            let mut body = &rest[5..4 + len];
            decoded.push(Message::read_from(&mut body).unwrap());
            rest = &rest[4 + len..];
        }
        assert!(matches!(&decoded[0], Message::Send(s) if s.to_pid == b.to_eetf()));
        assert!(matches!(&decoded[1], Message::MonitorPExit(m) if m.to_pid == b.to_eetf()));
        assert!(matches!(&decoded[2], Message::Exit(e) if e.from_pid == a.to_eetf()));
        assert!(matches!(&decoded[3], Message::AliasSend(s) if s.alias == r.to_eetf()));
    }

    #[test]
    fn calls_to_a_name_read_back_through_the_atom_cache() {
        // REG_SEND, as every call to `ash_gen_server` comes: its control message is read
        // without building it as a term, with or without the atom cache, PID_EXT or NEW_PID_EXT.
        let from = Pid {
            node: Atom::new("c@h").unwrap(),
            id: 9,
            serial: 1,
            creation: 7,
        };
        let srv = Atom::new("srv").unwrap();
        for cache in [true, false] {
            let mut out = FrameWriter::new(cache);
            for i in 0..3 {
                out.reg_send(&from, srv, |w| w.term(&Value::Int(i)));
            }
            let mut reader = super::super::frame::FrameReader::new();
            let space = reader.read_space();
            space[..out.buf.len()].copy_from_slice(&out.buf);
            reader.filled(out.buf.len());
            for i in 0..3 {
                match reader.next_frame().unwrap() {
                    Some(super::super::frame::Frame::Control(c)) => assert_eq!(
                        *c,
                        Control::RegSend {
                            from,
                            to: srv,
                            message: Value::Int(i)
                        }
                    ),
                    _ => panic!("not a frame"),
                }
            }
        }
        // PID_EXT (103, one-byte creation), no atom cache, then the message 5.
        let old_pid = [
            131, 104, 4, 97, 6, 103, 119, 3, b'c', b'@', b'h', 0, 0, 0, 9, 0, 0, 0, 1, 7, 119, 0,
            119, 3, b's', b'r', b'v', 131, 97, 5,
        ];
        assert_eq!(
            decode(&old_pid, None).unwrap(),
            Control::RegSend {
                from,
                to: srv,
                message: Value::Int(5)
            }
        );
        // Without its message, or with bytes after it: errors, as before.
        let cut = old_pid.len() - 3;
        assert!(decode(&old_pid[..cut], None).is_err());
        let mut longer = old_pid.to_vec();
        longer.push(106);
        assert!(decode(&longer, None).is_err());
    }

    #[test]
    fn malformed_control_messages_are_errors() {
        let mut bytes = Vec::new();
        etf::encode(&Value::tuple(vec![Value::Int(2), Value::nil()]), &mut bytes);
        assert!(decode(&bytes, None).is_err());
        let mut bytes = Vec::new();
        etf::encode(&Value::Int(2), &mut bytes);
        assert!(decode(&bytes, None).is_err());
        // SEND without its message.
        let mut bytes = Vec::new();
        let to = Pid {
            node: Atom::new("a@h").unwrap(),
            id: 1,
            serial: 0,
            creation: 1,
        };
        etf::encode(
            &Value::tuple(vec![Value::Int(2), Value::nil(), Value::Pid(Box::new(to))]),
            &mut bytes,
        );
        assert!(decode(&bytes, None).is_err());
    }
}
