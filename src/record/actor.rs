//! The record actor: one per record, with its own mailbox, state, pid and supervisor.
//!
//! Messages to a record go through [`RecordActor::deliver`]: they queue in the mailbox and are
//! handled one at a time, in order. Like a BEAM process, an actor only occupies a thread while
//! it has messages: whichever task delivers to an idle actor runs its turns until the mailbox is
//! empty, so an idle record costs no task and a busy one never runs two messages at once.
//!
//! A turn works on the last committed record and ends in a `Step`: commit a new record, stop,
//! start expiring, and what to reply. A panic or internal error in a turn is a failure: the
//! caller gets `{error, {record_crashed, Reason}}`, the old pid exits with the reason, and the
//! supervisor ([`super::supervisor`]) restarts the actor from its last committed record — or,
//! past the restart intensity, removes the record.

use super::error::{StoreError, TurnError};
use super::expiry::{EXPIRY_RECHECK_MS, Expiry, ExpiryAuthority, notice};
use super::op::{Fault, Op, Outcome, Upsert, UpsertKind};
use super::registry::{self, Occupant};
use super::supervisor::{Decision, RestartHistory, is_clean_exit};
use super::timers::Timers;
use crate::node::{Node, Process};
use crate::query::expr::{Scope, VExpr, eval_atomics};
use crate::term::{Atom, Pid, Record, Value, atoms};
use parking_lot::Mutex;
use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// Why a record expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireReason {
    /// Untouched for `inactivity_timeout`.
    Inactivity,
    /// Older than `maximum_lifetime`.
    Lifetime,
}

impl ExpireReason {
    /// The reason as the atom the protocol uses.
    pub fn atom(self) -> Atom {
        Atom::from_static(match self {
            ExpireReason::Inactivity => "inactivity_timeout",
            ExpireReason::Lifetime => "maximum_lifetime",
        })
    }

    /// The exit reason of an expired record: `{shutdown, Reason}`.
    pub fn exit_reason(self) -> Value {
        Value::pair(Value::Atom(*atoms::SHUTDOWN), Value::Atom(self.atom()))
    }
}

/// A resource whose records are held by their actors.
pub type Resource = registry::Resource<RecordActor>;

/// The resources of a node, their records held by their actors.
pub type Store = registry::Store<RecordActor>;

/// What a record's actor needs of the service it runs in: the record service
/// ([`super::service::RecordService`]) is its host.
pub trait Host: Send + Sync {
    /// The node the records' processes live on.
    fn node(&self) -> &Arc<Node>;
    /// The records' timers.
    fn timers(&self) -> &Timers<RecordActor>;
    /// The expiry handlers.
    fn expiry(&self) -> &Expiry<RecordActor>;
    /// Who acts on expiries, if not this node alone.
    fn expiry_authority(&self) -> Option<&Arc<dyn ExpiryAuthority>>;
    /// `n` requests were queued for a turn (`true`) or taken from a mailbox.
    fn count_queued(&self, queued: bool, n: usize);
    /// A record got a pid.
    fn pid_spawned(&self);
    /// A record's pid exits with `reason` (the record is gone, or failed): its monitors get
    /// `'DOWN'` and its links an exit signal, now or, while a call to it is held
    /// ([`super::service::RecordService::hold_exit`]), once the call is answered.
    fn pid_exits(&self, pid: &Pid, reason: &Value);
    /// Creates the record, or updates the one that has the same keys (an upsert that found
    /// its record gone, or no longer with those keys, starts over here).
    fn upsert(&self, resource: &Arc<Resource>, upsert: Upsert, reply: ReplyTo);
}

/// Where an operation's result goes: the protocol layer's business, not the record's.
pub trait Reply: Send {
    /// Delivers the result.
    fn send(self: Box<Self>, svc: &dyn Host, outcome: Outcome);
    /// The record was already gone when the request reached it; `op` is handed back.
    fn gone(self: Box<Self>, svc: &dyn Host, resource: &Arc<Resource>, op: Op);
}

/// Who waits for a turn's result, if anyone.
pub type ReplyTo = Option<Box<dyn Reply>>;

/// A message in a record's mailbox.
pub enum Envelope {
    /// A request, and where its result goes.
    Call(ReplyTo, Op),
    /// A deadline from [`super::timers`].
    Timer {
        /// The deadline, in node milliseconds.
        at: u64,
    },
    /// An exit signal from a link or `exit/2`.
    Exit {
        /// Who sent it.
        from: Pid,
        /// The exit reason.
        reason: Value,
        /// Whether it came through a link.
        link: bool,
    },
    /// The expiry handler this record waited on is gone.
    HandlerGone,
    /// The record was removed from the registry from outside (`clear`): stop with this reason.
    Stop(Value),
}

struct Inner {
    committed: Option<Record>,
    mailbox: VecDeque<Envelope>,
    running: bool,
    pid: Option<Pid>,
    born: u64,
    last_touch: u64,
    timer_at: Option<u64>,
    expiring: Option<ExpireReason>,
    history: Option<Box<RestartHistory>>,
}

/// What a turn starts from.
struct Turn {
    record: Record,
    born: u64,
    last_touch: u64,
    timer_at: Option<u64>,
    expiring: Option<ExpireReason>,
}

/// What a turn decided.
#[derive(Default)]
struct Step {
    reply: Option<Outcome>,
    commit: Option<Record>,
    touch: bool,
    /// The record ends with this exit reason (already removed from the registry).
    stop: Option<Value>,
    /// The record fails with this reason (supervisor decides).
    fail: Option<Value>,
    expiring: Option<ExpireReason>,
    clear_timer: bool,
    timer: Option<u64>,
    /// An upsert that found this record no longer has its keys: look it up again.
    retry_upsert: Option<Box<Upsert>>,
}

/// One record's actor.
pub struct RecordActor {
    /// The resource the record belongs to.
    pub resource: Arc<Resource>,
    /// When the record was created, in milliseconds since the Unix epoch (what the journal
    /// keeps, so a restored record keeps its remaining lifetime).
    pub born_wall: i64,
    inner: Mutex<Inner>,
}

impl RecordActor {
    /// The actor's pid, giving it one if it has none yet: `process` makes what the node
    /// delivers that pid's messages to (given the actor and the new pid). `None` once the
    /// record is gone.
    pub fn pid(
        self: &Arc<Self>,
        svc: &dyn Host,
        process: impl FnOnce(Arc<RecordActor>, Pid) -> Arc<dyn Process>,
    ) -> Option<Pid> {
        let mut inner = self.inner.lock();
        inner.committed.as_ref()?;
        if let Some(pid) = inner.pid {
            return Some(pid);
        }
        let pid = svc.node().spawn(|pid| process(self.clone(), pid));
        svc.pid_spawned();
        inner.pid = Some(pid);
        Some(pid)
    }

    /// Ends the actor's pid, if it has one, with `reason` (the record stays; asked again, it
    /// gets a new pid): a cluster member that no longer leads lets its records' pids go with
    /// `{shutdown, {moved, Leader}}`. Whether it had one.
    pub fn release_pid(&self, svc: &dyn Host, reason: &Value) -> bool {
        let pid = self.inner.lock().pid.take();
        if let Some(pid) = &pid {
            svc.pid_exits(pid, reason);
        }
        pid.is_some()
    }

    /// The record's primary key as a map of its fields; `None` once the record is gone.
    pub fn pk(&self) -> Option<Value> {
        let inner = self.inner.lock();
        let key = self.resource.key_of(inner.committed.as_ref()?).ok()?;
        Some(self.resource.pk_value(&key))
    }

    /// Resets the inactivity timer (a query returned the record, or it was created).
    pub fn touch(self: &Arc<Self>, svc: &dyn Host) {
        let now = svc.timers().now();
        let timer = {
            let mut inner = self.inner.lock();
            if inner.committed.is_none() {
                return;
            }
            inner.last_touch = now;
            self.arm(&mut inner)
        };
        if let Some(at) = timer {
            svc.timers().schedule(at, self);
        }
    }

    /// Queues `envelope` and, if the actor is idle, runs its turns until the mailbox is empty.
    pub fn deliver(self: &Arc<Self>, svc: &dyn Host, envelope: Envelope) {
        let mut inner = self.inner.lock();
        if inner.committed.is_none() {
            drop(inner);
            return dead_letter(svc, &self.resource, envelope);
        }
        let envelope = match envelope {
            Envelope::Call(reply_to, Op::Get) if !inner.running => {
                return self.get_now(svc, inner, reply_to);
            }
            other => other,
        };
        if inner.running {
            inner.mailbox.push_back(envelope);
            svc.count_queued(true, 1);
            return;
        }
        // An idle actor's mailbox is empty: this envelope's turn starts at once, and only
        // envelopes that arrive during a turn wait (and are counted as queued), so an
        // uncontended request does not touch the service-wide counter.
        debug_assert!(inner.mailbox.is_empty(), "an idle actor has nothing queued");
        inner.running = true;
        let mut first = Some(envelope);
        loop {
            let envelope = match first.take() {
                Some(envelope) => envelope,
                None => {
                    let Some(envelope) = inner.mailbox.pop_front() else {
                        inner.running = false;
                        return;
                    };
                    svc.count_queued(false, 1);
                    envelope
                }
            };
            let turn = Turn {
                record: inner
                    .committed
                    .clone()
                    .expect("a running actor has a record"),
                born: inner.born,
                last_touch: inner.last_touch,
                timer_at: inner.timer_at,
                expiring: inner.expiring,
            };
            drop(inner);

            let now = svc.timers().now();
            let (reply_to, body) = match envelope {
                Envelope::Call(reply_to, op) => (reply_to, Body::Op(op)),
                Envelope::Timer { at } => (None, Body::Timer(at)),
                Envelope::Exit { from, reason, link } => (None, Body::Exit(from, reason, link)),
                Envelope::HandlerGone => (None, Body::HandlerGone),
                Envelope::Stop(reason) => (None, Body::Stop(reason)),
            };
            let applied = Cell::new(None);
            let step = match catch_unwind(AssertUnwindSafe(|| {
                self.turn(svc, &turn, body, now, &applied)
            }))
            .unwrap_or_else(|panic| Err(TurnError::Panicked(panic_message(&panic))))
            {
                Ok(step) => step,
                Err(failure) => Step {
                    fail: Some(failure.to_term()),
                    ..Step::default()
                },
            };

            let mut step = step;
            if let Some(applied) = applied.take().filter(|_| step.fail.is_some())
                && !self.roll_back(&turn.record, &applied)
            {
                let reason = step.fail.take().unwrap_or_else(Value::nil);
                step.reply = Some(Outcome::Error(StoreError::RecordCrashed(reason.clone())));
                step.stop = Some(reason);
            }
            inner = self.inner.lock();
            let after = self.apply(&mut inner, step, now);
            let gone = inner.committed.is_none();
            let leftovers: Vec<Envelope> = if gone {
                inner.running = false;
                svc.count_queued(false, inner.mailbox.len());
                inner.mailbox.drain(..).collect()
            } else {
                Vec::new()
            };
            drop(inner);

            after.finish(svc, self, reply_to);
            for envelope in leftovers {
                dead_letter(svc, &self.resource, envelope);
            }
            if gone {
                return;
            }
            inner = self.inner.lock();
        }
    }

    /// A `get` for an idle actor (nothing queued, no turn running), served at once: reading
    /// the committed record is the whole turn and cannot fail, so it skips the mailbox and the
    /// turn's bookkeeping; it touches the record as a turn would.
    fn get_now(
        self: &Arc<Self>,
        svc: &dyn Host,
        mut inner: parking_lot::MutexGuard<'_, Inner>,
        reply_to: ReplyTo,
    ) {
        let record = inner
            .committed
            .clone()
            .expect("the caller checked the record is there");
        inner.last_touch = svc.timers().now();
        let timer = self.arm(&mut inner);
        drop(inner);
        if let Some(reply) = reply_to {
            reply.send(svc, Outcome::Record(record));
        }
        if let Some(at) = timer {
            svc.timers().schedule(at, self);
        }
    }

    /// Handles one message against the committed record. Runs without the state lock.
    ///
    /// A turn's store change ([`Resource::commit`]) is its last fallible step; should the turn
    /// fail after it anyway, it leaves the record it put in the store in `applied`, so the
    /// failure puts the committed record back.
    fn turn(
        self: &Arc<Self>,
        svc: &dyn Host,
        turn: &Turn,
        body: Body,
        now: u64,
        applied: &Cell<Option<Record>>,
    ) -> Result<Step, TurnError> {
        let mut step = Step::default();
        match body {
            Body::Op(Op::Get) => {
                step.reply = Some(Outcome::Record(turn.record.clone()));
                step.touch = true;
            }
            Body::Op(Op::KeepAlive) => {
                step.reply = Some(Outcome::Ok);
                step.touch = true;
            }
            Body::Op(Op::Update {
                changes,
                filter,
                atomics,
            }) => {
                step.touch = true;
                if filter.is_some_and(|f| !f.matches(&turn.record)) {
                    step.reply = Some(Outcome::Error(StoreError::Stale));
                } else {
                    let new = match self.changed(&turn.record, &changes, &atomics, None) {
                        Ok(new) => new,
                        Err(e) => {
                            step.reply = Some(Outcome::Error(e));
                            return Ok(step);
                        }
                    };
                    match self.resource.commit(self, &turn.record, &new) {
                        Ok(()) => {
                            step.reply = Some(Outcome::Record(new.clone()));
                            step.commit = Some(new);
                        }
                        Err(e) => step.reply = Some(Outcome::Error(e)),
                    }
                }
            }
            Body::Op(Op::Upsert(upsert)) => {
                step.touch = true;
                if !self
                    .resource
                    .still_has_keys(&turn.record, &upsert.keys, &upsert.record)
                {
                    // The record no longer has the upsert's key values (an update changed them
                    // between the lookup and this turn): start over from the lookup. Checked
                    // before the condition, which is about the record that has those values.
                    step.retry_upsert = Some(upsert);
                } else if upsert
                    .condition
                    .as_ref()
                    .is_some_and(|c| !c.matches_upsert(&turn.record, Some(&upsert.record)))
                {
                    step.reply = Some(Outcome::Upserted(UpsertKind::Skipped, turn.record.clone()));
                } else {
                    let new = match self.changed(
                        &turn.record,
                        &upsert.set,
                        &upsert.atomics,
                        Some(&upsert.record),
                    ) {
                        Ok(new) => new,
                        Err(e) => {
                            step.reply = Some(Outcome::Error(e));
                            return Ok(step);
                        }
                    };
                    match self.resource.commit(self, &turn.record, &new) {
                        Ok(()) => {
                            step.reply = Some(Outcome::Upserted(UpsertKind::Updated, new.clone()));
                            step.commit = Some(new);
                        }
                        Err(e) => step.reply = Some(Outcome::Error(e)),
                    }
                }
            }
            Body::Op(Op::Destroy { filter }) => {
                if filter.is_some_and(|f| !f.matches(&turn.record)) {
                    step.reply = Some(Outcome::Error(StoreError::Stale));
                    step.touch = true;
                } else if self.resource.remove(self, &turn.record) {
                    step.reply = Some(Outcome::Destroyed(turn.record.clone()));
                    step.stop = Some(match turn.expiring {
                        Some(reason) => reason.exit_reason(),
                        None => Value::Atom(*atoms::NORMAL),
                    });
                } else {
                    step.reply = Some(Outcome::Error(StoreError::NotFound));
                }
            }
            Body::Op(Op::Fault(Fault::Panic)) => panic!("fault injected by request"),
            Body::Op(Op::Fault(Fault::Error)) => return Err(TurnError::FaultInjected),
            Body::Op(Op::Fault(Fault::AfterChange(changes))) => {
                let new = turn.record.merge(&changes);
                if let Err(e) = self.resource.commit(self, &turn.record, &new) {
                    step.reply = Some(Outcome::Error(e));
                    return Ok(step);
                }
                applied.set(Some(new));
                panic!("fault injected by request after the change reached the store");
            }
            Body::Timer(at) => {
                if turn.timer_at != Some(at) {
                    return Ok(step);
                }
                step.clear_timer = true;
                if defers_expiry(svc, &mut step, now) {
                    return Ok(step);
                }
                if let Some(reason) = turn.expiring {
                    self.remove_expired(
                        svc,
                        turn,
                        reason,
                        &mut step,
                        "did not destroy it in time",
                        now,
                    );
                    return Ok(step);
                }
                let config = self.resource.config();
                let lifetime = config.maximum_lifetime.map(|l| turn.born.saturating_add(l));
                let inactivity = config
                    .inactivity_timeout
                    .map(|t| turn.last_touch.saturating_add(t));
                let expired = if lifetime.is_some_and(|d| d <= now) {
                    Some(ExpireReason::Lifetime)
                } else if inactivity.is_some_and(|d| d <= now) {
                    Some(ExpireReason::Inactivity)
                } else {
                    None
                };
                match expired {
                    None => step.timer = [lifetime, inactivity].into_iter().flatten().min(),
                    Some(reason) => self.expire(svc, turn, reason, &mut step, now),
                }
            }
            Body::Stop(reason) => step.stop = Some(reason),
            Body::HandlerGone => {
                if let Some(reason) = turn.expiring {
                    self.remove_expired(
                        svc,
                        turn,
                        reason,
                        &mut step,
                        "is gone",
                        svc.timers().now(),
                    );
                }
            }
            Body::Exit(from, reason, link) => {
                if matches!(&reason, Value::Atom(a) if *a == *atoms::NORMAL) {
                    return Ok(step);
                }
                let reason = match reason {
                    Value::Atom(a) if a == *atoms::KILL && !link => Value::Atom(*atoms::KILLED),
                    other => other,
                };
                tracing::info!(resource = %self.resource.name, %from, ?reason, "record process got an exit signal");
                if is_clean_exit(&reason) {
                    self.resource.remove(self, &turn.record);
                    step.stop = Some(reason);
                } else {
                    step.fail = Some(reason);
                }
            }
        }
        Ok(step)
    }

    /// A failed turn had put `applied` in the store: put the committed `record` back (its key
    /// and identity values too), so the restarted actor, queries and identities agree.
    /// Returns false when that is impossible (a re-keying change whose old key or identity
    /// value was taken meanwhile): the change is then removed from the store, and the record
    /// must end.
    fn roll_back(self: &Arc<Self>, record: &Record, applied: &Record) -> bool {
        match self.resource.commit(self, applied, record) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(
                    resource = %self.resource.name,
                    error = %e,
                    "a failed turn's change could not be rolled back; the record is removed"
                );
                self.resource.remove(self, applied);
                false
            }
        }
    }

    /// `record` with `changes` and then the values of `atomics` merged in.
    fn changed(
        &self,
        record: &Record,
        changes: &Record,
        atomics: &[(Atom, VExpr)],
        incoming: Option<&Record>,
    ) -> Result<Record, StoreError> {
        let merged = record.merge(changes);
        if atomics.is_empty() {
            return Ok(merged);
        }
        let config = self.resource.config();
        let scope = Scope {
            record,
            incoming,
            types: &config.types,
        };
        let computed = eval_atomics(atomics, scope).map_err(|e| StoreError::Expr(e.0))?;
        Ok(merged.merge(&computed))
    }

    /// The expiry handler of this expired record failed it (`why`): the node removes it.
    fn remove_expired(
        self: &Arc<Self>,
        svc: &dyn Host,
        turn: &Turn,
        reason: ExpireReason,
        step: &mut Step,
        why: &str,
        now: u64,
    ) {
        tracing::debug!(resource = %self.resource.name, record = ?turn.record, "removed");
        tracing::warn!(
            resource = %self.resource.name,
            "the expiry handler of an expired record {why}; the node removed the record itself"
        );
        if !self.remove_everywhere(svc, turn, reason, step, now) {
            self.resource.remove(self, &turn.record);
            step.stop = Some(reason.exit_reason());
        }
    }

    /// Has the [`ExpiryAuthority`], if any, remove this expired record on
    /// every replica (checking again after the grace period, should that not happen); false
    /// without one (the node removes it itself).
    fn remove_everywhere(
        self: &Arc<Self>,
        svc: &dyn Host,
        turn: &Turn,
        reason: ExpireReason,
        step: &mut Step,
        now: u64,
    ) -> bool {
        let Some(authority) = svc.expiry_authority() else {
            return false;
        };
        if let Ok(key) = self.resource.key_of(&turn.record) {
            authority.remove(
                self.resource.name,
                self.resource.tenant.clone(),
                self.resource.pk_value(&key),
            );
        }
        step.expiring = Some(reason);
        step.timer = Some(now.saturating_add(self.resource.config().expiry_grace));
        true
    }

    fn expire(
        self: &Arc<Self>,
        svc: &dyn Host,
        turn: &Turn,
        reason: ExpireReason,
        step: &mut Step,
        now: u64,
    ) {
        if defers_expiry(svc, step, now) {
            return;
        }
        let Ok(key) = self.resource.key_of(&turn.record) else {
            return;
        };
        let notice = notice(
            svc.node().name_atom,
            self.resource.name,
            self.resource.tenant.as_ref(),
            self.resource.pk_value(&key),
            &turn.record,
            reason.atom(),
        );
        let handled = svc
            .expiry()
            .notify(svc.node(), self.resource.name, self, &notice);
        metrics::counter!(
            "ash_gen_server_expiries_total",
            "reason" => reason.atom().as_str(),
            "handled" => if handled { "true" } else { "false" }
        )
        .increment(1);
        if handled {
            step.expiring = Some(reason);
            step.timer = Some(now.saturating_add(self.resource.config().expiry_grace));
        } else {
            svc.expiry()
                .unhandled(self.resource.name, &turn.record, reason.atom(), now);
            if !self.remove_everywhere(svc, turn, reason, step, now) {
                self.resource.remove(self, &turn.record);
                step.stop = Some(reason.exit_reason());
            }
        }
    }

    /// Applies a step to the state (under its lock); returns what to do after unlocking.
    fn apply(&self, inner: &mut Inner, step: Step, now: u64) -> After {
        let mut after = After {
            reply: step.reply,
            retry_upsert: step.retry_upsert,
            ..After::default()
        };
        if let Some(record) = step.commit {
            inner.committed = Some(record);
        }
        if step.clear_timer {
            inner.timer_at = None;
        }
        if let Some(reason) = step.expiring {
            inner.expiring = Some(reason);
        }
        if let Some(at) = step.timer {
            inner.timer_at = Some(inner.timer_at.map_or(at, |t| t.min(at)));
            after.timer = Some(at);
        }
        if step.touch {
            inner.last_touch = now;
            after.timer = after.timer.or(self.arm(inner));
        }
        if let Some(reason) = step.stop {
            inner.committed = None;
            after.exit = inner.pid.take().map(|pid| (pid, reason));
        } else if let Some(reason) = step.fail {
            let policy = self.resource.config().restart;
            let history = inner.history.get_or_insert_with(Default::default);
            after.reply = Some(Outcome::Error(StoreError::RecordCrashed(reason.clone())));
            let decision = history.failed(policy, now);
            let label = match decision {
                Decision::Restart => "restart",
                Decision::GiveUp => "give_up",
            };
            metrics::counter!("ash_gen_server_restarts_total", "decision" => label).increment(1);
            match decision {
                Decision::Restart => {
                    tracing::warn!(
                        resource = %self.resource.name,
                        ?reason,
                        restarts = history.recent(),
                        "record actor failed; restarted with its last committed state"
                    );
                    after.exit = inner.pid.take().map(|pid| (pid, reason));
                }
                Decision::GiveUp => {
                    tracing::error!(
                        resource = %self.resource.name,
                        ?reason,
                        max_restarts = policy.max_restarts,
                        max_seconds = policy.max_seconds,
                        "record actor keeps failing; removed the record"
                    );
                    after.remove = inner.committed.take();
                    let final_reason = Value::pair(
                        Value::Atom(*atoms::SHUTDOWN),
                        Value::pair(Value::Atom(Atom::from_static("max_restarts")), reason),
                    );
                    after.exit = inner.pid.take().map(|pid| (pid, final_reason));
                }
            }
        }
        after
    }

    /// Makes sure a deadline is pending when the resource has lifetimes; returns one to schedule.
    fn arm(&self, inner: &mut Inner) -> Option<u64> {
        if inner.expiring.is_some() {
            return None;
        }
        let config = self.resource.config();
        if !config.has_lifetimes() {
            return None;
        }
        let lifetime = config
            .maximum_lifetime
            .map(|l| inner.born.saturating_add(l));
        let inactivity = config
            .inactivity_timeout
            .map(|t| inner.last_touch.saturating_add(t));
        let next = [lifetime, inactivity].into_iter().flatten().min()?;
        match inner.timer_at {
            Some(pending) if pending <= next => None,
            _ => {
                inner.timer_at = Some(next);
                Some(next)
            }
        }
    }
}

impl Occupant for RecordActor {
    /// A new actor holding `record`: `born` is the creation time in node milliseconds
    /// (possibly before the node started, for a restored record), `born_wall` the same in Unix
    /// milliseconds; the inactivity timer counts from `now`.
    fn start(
        resource: Arc<Resource>,
        record: Record,
        now: u64,
        born: u64,
        born_wall: i64,
    ) -> Arc<RecordActor> {
        Arc::new(RecordActor {
            resource,
            born_wall,
            inner: Mutex::new(Inner {
                committed: Some(record),
                mailbox: VecDeque::new(),
                running: false,
                pid: None,
                born,
                last_touch: now,
                timer_at: None,
                expiring: None,
                history: None,
            }),
        })
    }

    fn born_wall(&self) -> i64 {
        self.born_wall
    }
}

enum Body {
    Op(Op),
    Timer(u64),
    Exit(Pid, Value, bool),
    HandlerGone,
    Stop(Value),
}

/// Effects of a turn that happen after the state lock is released.
#[derive(Default)]
struct After {
    reply: Option<Outcome>,
    timer: Option<u64>,
    exit: Option<(Pid, Value)>,
    remove: Option<Record>,
    retry_upsert: Option<Box<Upsert>>,
}

impl After {
    fn finish(self, svc: &dyn Host, actor: &Arc<RecordActor>, reply_to: ReplyTo) {
        if let Some(removed) = &self.remove {
            actor.resource.remove(actor, removed);
        }
        if let Some(upsert) = self.retry_upsert {
            return svc.upsert(&actor.resource, *upsert, reply_to);
        }
        // The reply goes before the exit signals: a caller of the record's own pid that asked
        // for `destroy` gets its `ok` before its monitor's 'DOWN'.
        if let (Some(outcome), Some(reply)) = (self.reply, reply_to) {
            reply.send(svc, outcome);
        }
        if let Some((pid, reason)) = &self.exit {
            svc.pid_exits(pid, reason);
        }
        if let Some(at) = self.timer {
            svc.timers().schedule(at, actor);
        }
    }
}

/// A message for a record that is already gone.
fn dead_letter(svc: &dyn Host, resource: &Arc<Resource>, envelope: Envelope) {
    if let Envelope::Call(Some(reply), op) = envelope {
        reply.gone(svc, resource, op);
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Whether this node leaves expiries to another (a cluster member that does not lead): then the
/// record checks again after [`EXPIRY_RECHECK_MS`].
fn defers_expiry(svc: &dyn Host, step: &mut Step, now: u64) -> bool {
    match svc.expiry_authority() {
        Some(authority) if !authority.acts() => {
            step.timer = Some(now.saturating_add(EXPIRY_RECHECK_MS));
            true
        }
        _ => false,
    }
}
