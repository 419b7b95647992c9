//! The record service: the resources with their records, the lifetimes' timers and the expiry
//! handlers, on a node whose process API is all it uses.
//!
//! It is owned by one process of the node (the protocol server), whose pid it uses to monitor
//! expiry handlers; record actors reach other processes only through the [`Node`]. The
//! operations here are the ones that start outside any one actor: creating a record and
//! upserting.

use super::actor::{Envelope, Host, RecordActor, ReplyTo, Resource, Store};
use super::error::StoreError;
use super::expiry::{Expiry, ExpiryAuthority};
use super::op::{Op, Outcome, Upsert, UpsertKind};
use super::timers::Timers;
use crate::node::Node;
use crate::term::{Atom, Pid, Record, Ref, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How many times an upsert looks up and creates before it gives up on a key that keeps being
/// created and removed under it.
pub const UPSERT_ATTEMPTS: usize = 3;

/// What an upsert that lost [`UPSERT_ATTEMPTS`] races in a row answers (as `bad_request`).
pub const UPSERT_RACED: &str = "upsert raced with concurrent changes three times; try again";

/// The record service of one node.
pub struct RecordService {
    node: Arc<Node>,
    owner: Pid,
    /// The resources and their records.
    pub store: Store,
    /// Record lifetimes.
    pub timers: Arc<Timers<RecordActor>>,
    /// Expiry handlers.
    pub expiry: Expiry<RecordActor>,
    pids: AtomicUsize,
    queued: AtomicUsize,
    authority: std::sync::OnceLock<Arc<dyn ExpiryAuthority>>,
    held: parking_lot::Mutex<rustc_hash::FxHashMap<Pid, HeldExit>>,
}

/// A record pid whose calls are being answered elsewhere: its exit waits for the answers.
#[derive(Default)]
struct HeldExit {
    /// Calls not answered yet.
    calls: usize,
    /// The exit reason, once the pid exited meanwhile.
    reason: Option<Value>,
}

impl RecordService {
    /// An empty service on `node`, owned by the local process `owner`.
    pub fn new(node: Arc<Node>, owner: Pid) -> Arc<RecordService> {
        Arc::new(RecordService {
            node,
            owner,
            store: Store::default(),
            timers: Arc::new(Timers::new()),
            expiry: Expiry::default(),
            pids: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            authority: std::sync::OnceLock::new(),
            held: Default::default(),
        })
    }

    /// A call to the record pid `pid` is answered by another process (a cluster member's
    /// router, through the log): should the pid exit meanwhile — the call destroyed the record —
    /// its `'DOWN'` and exit signals wait until [`RecordService::release_exit`], so that the
    /// caller gets its answer first (as `gen_server:call` needs).
    pub fn hold_exit(&self, pid: Pid) {
        self.held.lock().entry(pid).or_default().calls += 1;
    }

    /// The call [`RecordService::hold_exit`] held is answered: the pid's exit, if it exited
    /// meanwhile and no other call holds it, goes out now.
    pub fn release_exit(&self, pid: &Pid) {
        let reason = {
            let mut held = self.held.lock();
            let Some(entry) = held.get_mut(pid) else {
                return;
            };
            entry.calls -= 1;
            if entry.calls > 0 {
                return;
            }
            held.remove(pid).and_then(|entry| entry.reason)
        };
        if let Some(reason) = reason {
            self.node.exit(pid, &reason);
        }
    }

    /// Removes every record of `namespaces` (resources or tenants' namespaces of them): each
    /// actor stops with `reason`, its pid exiting with it. How many records were removed.
    pub fn stop_all(
        &self,
        namespaces: impl IntoIterator<Item = Arc<Resource>>,
        reason: &Value,
    ) -> usize {
        let mut removed = 0;
        for namespace in namespaces {
            let actors = namespace.take_all();
            removed += actors.len();
            for actor in actors {
                actor.deliver(self, Envelope::Stop(reason.clone()));
            }
        }
        removed
    }

    /// Ends every record's pid with `reason` (the records stay; asked again, each gets a new
    /// pid). How many pids ended.
    pub fn release_pids(&self, reason: &Value) -> usize {
        let mut released = 0;
        for resource in self.store.all() {
            for actor in resource.actors() {
                released += usize::from(actor.release_pid(self, reason));
            }
        }
        released
    }

    /// Hands expiries to `authority` from now on (once).
    pub fn set_expiry_authority(&self, authority: Arc<dyn ExpiryAuthority>) {
        let _ = self.authority.set(authority);
    }

    /// Makes `pid` an expiry handler of `resources` (all when `None`), monitored by the owner.
    pub fn subscribe_expiry(&self, pid: Pid, resources: Option<Vec<Atom>>) {
        self.expiry
            .subscribe(&self.node, &self.owner, pid, resources);
    }

    /// The expiry handlers, each with its resources (`None` for all).
    pub fn expiry_handlers(&self) -> Vec<(Pid, Option<Vec<Atom>>)> {
        self.expiry.handlers()
    }

    /// Stops `pid` being an expiry handler; records it was handling remove themselves.
    pub fn unsubscribe_expiry(&self, pid: &Pid) {
        let orphans = self.expiry.unsubscribe(&self.node, &self.owner, pid);
        self.handler_gone(orphans);
    }

    /// An expiry handler's monitor fired; records it was handling remove themselves.
    pub fn expiry_handler_down(&self, pid: &Pid, monitor: &Ref, reason: &Value) {
        let orphans = self.expiry.handler_down(pid, monitor, reason);
        self.handler_gone(orphans);
    }

    fn handler_gone(&self, waiting: Vec<Arc<RecordActor>>) {
        for actor in waiting {
            actor.deliver(self, Envelope::HandlerGone);
        }
    }

    /// Restarts every record's inactivity timeout now (a new leader of a cluster: reads that
    /// touched the records were served by the old one).
    pub fn touch_all(self: &Arc<Self>) {
        for resource in self.store.all() {
            for actor in resource.actors() {
                actor.touch(&**self);
            }
        }
    }

    /// Starts the background tasks: the timers, and the once-a-second summary of records that
    /// expired without a handler. They end when the service is dropped.
    pub fn spawn_tasks(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let timers = tokio::spawn(self.timers.clone().run(
            Arc::downgrade(self),
            |svc: &RecordService, at, actor: &Arc<RecordActor>| {
                actor.deliver(svc, Envelope::Timer { at })
            },
        ));
        let weak = Arc::downgrade(self);
        let log = tokio::spawn(async move {
            let mut every_second = tokio::time::interval(Duration::from_secs(1));
            loop {
                every_second.tick().await;
                let Some(svc) = weak.upgrade() else { return };
                svc.expiry.flush_log(svc.timers.now());
            }
        });
        vec![timers, log]
    }

    /// The node the service runs on.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The process that owns the service.
    pub fn owner(&self) -> Pid {
        self.owner
    }

    /// Number of records that have a pid.
    pub fn pids(&self) -> usize {
        self.pids.load(Ordering::Relaxed)
    }

    /// Requests queued in record actors' mailboxes, waiting for their turn (and their reply).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Sends `outcome` to `reply`, if anyone waits for it.
    pub fn respond(&self, reply: ReplyTo, outcome: Outcome) {
        if let Some(reply) = reply {
            reply.send(self, outcome);
        }
    }

    /// Creates a record: its actor starts, and its lifetime timers with it.
    pub fn create(&self, resource: &Arc<Resource>, record: Record) -> Result<Record, StoreError> {
        self.create_at(resource, record, None)
    }

    /// Creates a record born at `born_wall` (Unix milliseconds; now when `None`): its maximum
    /// lifetime counts from then (a cluster applies the leader's time, on every replica and
    /// on every replay of its log); its inactivity timeout from now.
    pub fn create_at(
        &self,
        resource: &Arc<Resource>,
        record: Record,
        born_wall: Option<i64>,
    ) -> Result<Record, StoreError> {
        let (now, born, born_wall) = self.birth(born_wall);
        let (actor, record) = resource.insert_born(record, now, born, born_wall)?;
        actor.touch(self);
        Ok(record)
    }

    /// Now (node milliseconds), and the node time and wall-clock time (Unix milliseconds) of
    /// a record born at `born_wall` (now when `None`).
    fn birth(&self, born_wall: Option<i64>) -> (u64, u64, i64) {
        let now = self.timers.now();
        match born_wall {
            None => (now, now, super::registry::wall_ms()),
            Some(born_wall) => {
                let age = u64::try_from(super::registry::wall_ms().saturating_sub(born_wall))
                    .unwrap_or(0);
                (now, now.saturating_sub(age), born_wall)
            }
        }
    }

    /// Creates every record, born at `born_wall` as [`RecordService::create_at`], or none:
    /// the first record (by position) that could not be created is returned with its position
    /// and why (`Resource::insert_all`).
    pub fn create_all(
        &self,
        resource: &Arc<Resource>,
        records: Vec<Record>,
        born_wall: Option<i64>,
    ) -> Result<Vec<Record>, super::registry::BatchError> {
        let (now, born, born_wall) = self.birth(born_wall);
        let created = resource.insert_all(records, now, born, born_wall)?;
        Ok(created
            .into_iter()
            .map(|(actor, record)| {
                actor.touch(self);
                record
            })
            .collect())
    }

    /// Creates the record, or updates the one that has the same `keys` (atomically, in its
    /// actor).
    pub fn upsert(&self, resource: &Arc<Resource>, upsert: Upsert, reply: ReplyTo) {
        let born_wall = upsert.born_wall;
        self.upsert_steps(
            resource,
            upsert,
            reply,
            |resource, upsert| resource.find_by(&upsert.keys, &upsert.record),
            |svc, resource, record| svc.create_at(resource, record, born_wall),
        )
    }

    /// The upsert's retry loop, with its two steps given: `find` the record with the keys,
    /// `create` one. A record created by someone else between our lookup and our create is found
    /// on retry; after [`UPSERT_ATTEMPTS`] such races in a row the caller gets
    /// [`UPSERT_RACED`].
    fn upsert_steps(
        &self,
        resource: &Arc<Resource>,
        upsert: Upsert,
        reply: ReplyTo,
        mut find: impl FnMut(&Arc<Resource>, &Upsert) -> Result<Option<Arc<RecordActor>>, StoreError>,
        mut create: impl FnMut(&Self, &Arc<Resource>, Record) -> Result<Record, StoreError>,
    ) {
        for _ in 0..UPSERT_ATTEMPTS {
            match find(resource, &upsert) {
                Err(e) => return self.respond(reply, Outcome::Error(e)),
                Ok(Some(actor)) => {
                    return actor
                        .deliver(self, Envelope::Call(reply, Op::Upsert(Box::new(upsert))));
                }
                Ok(None) => match create(self, resource, upsert.record.clone()) {
                    Ok(record) => {
                        return self.respond(reply, Outcome::Upserted(UpsertKind::Created, record));
                    }
                    Err(e @ (StoreError::AlreadyExists(_) | StoreError::IdentityConflict(..))) => {
                        if !matches!(find(resource, &upsert), Ok(Some(_))) {
                            return self.respond(reply, Outcome::Error(e));
                        }
                    }
                    Err(e) => return self.respond(reply, Outcome::Error(e)),
                },
            }
        }
        self.respond(
            reply,
            Outcome::Error(StoreError::BadRequest(UPSERT_RACED.into())),
        )
    }
}

impl Host for RecordService {
    fn node(&self) -> &Arc<Node> {
        &self.node
    }

    fn timers(&self) -> &Timers<RecordActor> {
        &self.timers
    }

    fn expiry(&self) -> &Expiry<RecordActor> {
        &self.expiry
    }

    fn expiry_authority(&self) -> Option<&Arc<dyn ExpiryAuthority>> {
        self.authority.get()
    }

    fn count_queued(&self, queued: bool, n: usize) {
        if queued {
            self.queued.fetch_add(n, Ordering::Relaxed);
        } else {
            self.queued.fetch_sub(n, Ordering::Relaxed);
        }
    }

    fn pid_spawned(&self) {
        self.pids.fetch_add(1, Ordering::Relaxed);
    }

    fn pid_exits(&self, pid: &Pid, reason: &Value) {
        self.pids.fetch_sub(1, Ordering::Relaxed);
        if let Some(entry) = self.held.lock().get_mut(pid) {
            entry.reason = Some(reason.clone());
            return;
        }
        self.node.exit(pid, reason);
    }

    fn upsert(&self, resource: &Arc<Resource>, upsert: Upsert, reply: ReplyTo) {
        RecordService::upsert(self, resource, upsert, reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Mailbox, NodeConfig};
    use crate::record::{Reply, ResourceConfig};
    use crate::term::{Atom, Value, parse_term};
    use std::sync::mpsc;

    fn t(s: &str) -> Value {
        parse_term(s).unwrap()
    }

    fn service(name: &str) -> (Arc<RecordService>, Mailbox) {
        let config = NodeConfig::new(format!("{name}@127.0.0.1").parse().unwrap(), "c".into());
        let node = Node::new(config, 1).unwrap();
        let owner = Mailbox::new(&node);
        (RecordService::new(node, owner.pid()), owner)
    }

    /// A reply that lands in a channel.
    struct Captured(mpsc::Sender<Outcome>);

    impl Reply for Captured {
        fn send(self: Box<Self>, _svc: &dyn Host, outcome: Outcome) {
            let _ = self.0.send(outcome);
        }
        fn gone(self: Box<Self>, _svc: &dyn Host, _r: &Arc<Resource>, _op: Op) {
            let _ = self.0.send(Outcome::Error(StoreError::NotFound));
        }
    }

    fn ask(svc: &RecordService, actor: &Arc<super::super::RecordActor>, op: Op) -> Outcome {
        let (tx, rx) = mpsc::channel();
        actor.deliver(svc, Envelope::Call(Some(Box::new(Captured(tx))), op));
        rx.recv_timeout(Duration::from_secs(5)).expect("a reply")
    }

    fn define(svc: &RecordService, config: ResourceConfig) -> Arc<Resource> {
        let name = Atom::new("thing").unwrap();
        svc.store.define(name, config).unwrap();
        svc.store.get(name).unwrap()
    }

    #[test]
    fn an_actor_serves_its_turns_in_order_and_commits_atomically() {
        let (svc, _owner) = service("unit_actor");
        let resource = define(&svc, ResourceConfig::new(vec![Atom::new("id").unwrap()]));
        let rec = crate::term::Record::from_map(&t("#{id => 1, n => 0}")).unwrap();
        svc.create(&resource, rec).unwrap();
        let key = resource.key_from_pk(&t("#{id => 1}")).unwrap();
        let actor = resource.lookup(&key).unwrap();
        for n in 1..=3 {
            let changes = crate::term::Record::from_map(&t(&format!("#{{n => {n}}}"))).unwrap();
            let guard = crate::query::filter::Expr::parse(&t(&format!("{{eq, n, {}}}", n - 1)));
            let outcome = ask(
                &svc,
                &actor,
                Op::Update {
                    changes,
                    filter: Some(guard.unwrap()),
                    atomics: Vec::new(),
                },
            );
            assert!(
                matches!(outcome, Outcome::Record(r) if r.to_value() == t(&format!("#{{id => 1, n => {n}}}")))
            );
        }
        // A stale guard changes nothing.
        let changes = crate::term::Record::from_map(&t("#{n => 99}")).unwrap();
        let guard = crate::query::filter::Expr::parse(&t("{eq, n, 0}")).unwrap();
        let outcome = ask(
            &svc,
            &actor,
            Op::Update {
                changes,
                filter: Some(guard),
                atomics: Vec::new(),
            },
        );
        assert!(matches!(outcome, Outcome::Error(StoreError::Stale)));
        assert!(
            matches!(ask(&svc, &actor, Op::Get), Outcome::Record(r) if r.to_value() == t("#{id => 1, n => 3}"))
        );
        assert!(matches!(
            ask(&svc, &actor, Op::Destroy { filter: None }),
            Outcome::Destroyed(_)
        ));
        // The actor is gone: a late request is handed back as gone.
        assert!(matches!(
            ask(&svc, &actor, Op::Get),
            Outcome::Error(StoreError::NotFound)
        ));
        assert_eq!(resource.len(), 0);
    }

    /// A process for a record's pid that takes every message and drops it.
    struct Quiet;

    impl crate::node::Process for Quiet {
        fn deliver(&self, _node: &Arc<Node>, _from: Option<Pid>, _message: Value) {}
    }

    fn down_reason(signal: Option<crate::node::mailbox::Signal>) -> Option<Value> {
        match signal? {
            crate::node::mailbox::Signal::Down { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_held_pid_exits_once_released_and_released_pids_leave_their_records() {
        let (svc, _owner) = service("unit_held");
        let resource = define(&svc, ResourceConfig::new(vec![Atom::new("id").unwrap()]));
        for id in 1..=2 {
            let rec = crate::term::Record::from_map(&t(&format!("#{{id => {id}}}"))).unwrap();
            svc.create(&resource, rec).unwrap();
        }
        let actor = |id: i64| {
            let key = resource
                .key_from_pk(&t(&format!("#{{id => {id}}}")))
                .unwrap();
            resource.lookup(&key).unwrap()
        };
        let pid = actor(1).pid(&*svc, |_, _| Arc::new(Quiet)).unwrap();
        assert_eq!(actor(1).pk(), Some(t("#{id => 1}")));
        let watcher = Mailbox::new(svc.node());
        watcher.monitor(&pid);
        // Held by two calls: the destroy's exit waits for both to be answered.
        svc.hold_exit(pid);
        svc.hold_exit(pid);
        assert!(matches!(
            ask(&svc, &actor(1), Op::Destroy { filter: None }),
            Outcome::Destroyed(_)
        ));
        svc.release_exit(&pid);
        assert_eq!(
            down_reason(watcher.recv(Duration::from_millis(50)).await),
            None
        );
        svc.release_exit(&pid);
        assert_eq!(
            down_reason(watcher.recv(Duration::from_secs(5)).await),
            Some(t("normal"))
        );
        assert_eq!(svc.pids(), 0);
        // Released pids end with the reason; the record stays and gets a new pid.
        let before = actor(2).pid(&*svc, |_, _| Arc::new(Quiet)).unwrap();
        watcher.monitor(&before);
        let moved = t("{shutdown, {moved, 'b@h'}}");
        assert_eq!(svc.release_pids(&moved), 1);
        assert_eq!(
            down_reason(watcher.recv(Duration::from_secs(5)).await),
            Some(moved)
        );
        let after = actor(2).pid(&*svc, |_, _| Arc::new(Quiet)).unwrap();
        assert_ne!(before, after);
        assert_eq!(svc.pids(), 1);
    }

    #[tokio::test]
    async fn lifetimes_expire_records_on_the_timer_heap_without_a_handler() {
        let (svc, _owner) = service("unit_timers");
        let _tasks = svc.spawn_tasks();
        let mut config = ResourceConfig::new(vec![Atom::new("id").unwrap()]);
        config.maximum_lifetime = Some(20);
        let resource = define(&svc, config);
        for id in 0..100 {
            let rec = crate::term::Record::from_map(&t(&format!("#{{id => {id}}}"))).unwrap();
            svc.create(&resource, rec).unwrap();
        }
        assert_eq!(resource.len(), 100);
        for _ in 0..500 {
            if resource.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(resource.len(), 0, "every record expired");
    }

    /// The race an upsert can lose: its lookup finds nothing, its create finds the key taken,
    /// the lookup after that finds the record — which is gone again by the next lookup. Three
    /// times in a row, and the caller is told; fewer, and the upsert goes through.
    #[test]
    fn an_upsert_that_loses_the_race_three_times_is_told_so() {
        let (svc, _owner) = service("unit_upsert_raced");
        let resource = define(&svc, ResourceConfig::new(vec![Atom::new("id").unwrap()]));
        let rec = |s: &str| crate::term::Record::from_map(&t(s)).unwrap();
        let existing = svc.create(&resource, rec("#{id => 7, n => 0}")).unwrap();
        let actor = resource
            .lookup(&resource.key_from_pk(&t("#{id => 7}")).unwrap())
            .unwrap();
        let upsert = || Upsert {
            record: rec("#{id => 1, n => 1}"),
            keys: vec![Atom::new("id").unwrap()],
            set: rec("#{n => 1}"),
            condition: None,
            atomics: Vec::new(),
            born_wall: None,
        };
        for races in [1, 2, 3] {
            let (tx, rx) = mpsc::channel();
            let mut lookups = 0;
            let mut creates = 0;
            svc.upsert_steps(
                &resource,
                upsert(),
                Some(Box::new(Captured(tx))),
                // Lookups alternate: nothing, then (after the failed create) a record.
                |_, _| {
                    lookups += 1;
                    Ok((lookups % 2 == 0).then(|| actor.clone()))
                },
                |svc, resource, record| {
                    creates += 1;
                    if creates <= races {
                        Err(StoreError::AlreadyExists(t("#{id => 1}")))
                    } else {
                        svc.create(resource, record)
                    }
                },
            );
            let outcome = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            if races < UPSERT_ATTEMPTS {
                assert!(
                    matches!(&outcome, Outcome::Upserted(UpsertKind::Created, r) if r.to_value() == t("#{id => 1, n => 1}")),
                    "{outcome:?}"
                );
                resource.remove(
                    &resource
                        .lookup(&resource.key_from_pk(&t("#{id => 1}")).unwrap())
                        .unwrap(),
                    &rec("#{id => 1, n => 1}"),
                );
            } else {
                assert!(
                    matches!(&outcome, Outcome::Error(StoreError::BadRequest(m)) if m == UPSERT_RACED),
                    "{outcome:?}"
                );
                assert_eq!(creates, UPSERT_ATTEMPTS);
                assert_eq!(lookups, 2 * UPSERT_ATTEMPTS);
            }
        }
        // Nothing else changed.
        assert_eq!(resource.len(), 1);
        assert!(
            matches!(ask(&svc, &actor, Op::Get), Outcome::Record(r) if r.to_value() == existing.to_value())
        );
    }

    #[test]
    fn an_upsert_reaching_a_record_that_lost_its_keys_looks_up_again() {
        let (svc, _owner) = service("unit_upsert_retry");
        let mut config = ResourceConfig::new(vec![Atom::new("id").unwrap()]);
        let email = Atom::new("email").unwrap();
        config.identities = vec![crate::record::Identity::new(t("by_email"), vec![email])];
        let resource = define(&svc, config);
        let rec = |s: &str| crate::term::Record::from_map(&t(s)).unwrap();
        svc.create(&resource, rec("#{id => 1, email => <<\"a\">>}"))
            .unwrap();
        let actor = resource
            .lookup(&resource.key_from_pk(&t("#{id => 1}")).unwrap())
            .unwrap();
        // As if the lookup had found record 1 by email b, and an update then changed its email.
        let upsert = Upsert {
            record: rec("#{id => 2, email => <<\"b\">>, n => 1}"),
            keys: vec![email],
            set: rec("#{n => 1}"),
            condition: None,
            atomics: Vec::new(),
            born_wall: None,
        };
        let outcome = ask(&svc, &actor, Op::Upsert(Box::new(upsert)));
        assert!(
            matches!(&outcome, Outcome::Upserted(UpsertKind::Created, r) if r.to_value() == t("#{id => 2, email => <<\"b\">>, n => 1}")),
            "{outcome:?}"
        );
        assert!(
            matches!(ask(&svc, &actor, Op::Get), Outcome::Record(r) if r.to_value() == t("#{id => 1, email => <<\"a\">>}"))
        );
    }

    /// The same race with a conditional upsert whose condition does not hold on the record
    /// that lost the key values: the key check comes first, so the upsert looks up again (and
    /// creates) instead of answering `skipped` with a record that does not have its keys.
    #[test]
    fn a_conditional_upsert_reaching_a_record_that_lost_its_keys_looks_up_again() {
        let (svc, _owner) = service("unit_upsert_retry_condition");
        let mut config = ResourceConfig::new(vec![Atom::new("id").unwrap()]);
        let email = Atom::new("email").unwrap();
        config.identities = vec![crate::record::Identity::new(t("by_email"), vec![email])];
        let resource = define(&svc, config);
        let rec = |s: &str| crate::term::Record::from_map(&t(s)).unwrap();
        svc.create(&resource, rec("#{id => 1, email => <<\"a\">>, n => 0}"))
            .unwrap();
        let actor = resource
            .lookup(&resource.key_from_pk(&t("#{id => 1}")).unwrap())
            .unwrap();
        // The condition fails on record 1 (n is 0): evaluated first, it would answer `skipped`.
        let upsert = Upsert {
            record: rec("#{id => 2, email => <<\"b\">>, n => 1}"),
            keys: vec![email],
            set: rec("#{n => 1}"),
            condition: Some(crate::query::filter::Expr::parse(&t("{eq, n, 5}")).unwrap()),
            atomics: Vec::new(),
            born_wall: None,
        };
        let outcome = ask(&svc, &actor, Op::Upsert(Box::new(upsert)));
        assert!(
            matches!(&outcome, Outcome::Upserted(UpsertKind::Created, r) if r.to_value() == t("#{id => 2, email => <<\"b\">>, n => 1}")),
            "{outcome:?}"
        );
        assert!(
            matches!(ask(&svc, &actor, Op::Get), Outcome::Record(r) if r.to_value() == t("#{id => 1, email => <<\"a\">>, n => 0}"))
        );
        assert_eq!(resource.len(), 2);
    }
}
