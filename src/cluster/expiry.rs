//! Expiry in a cluster: only the leader's timers act. An expired record is announced to
//! expiry handlers by the leader only, and one without a handler is destroyed through the log
//! (`{destroy, Resource, PK}`), so that every replica removes it alike. A member that becomes
//! leader restarts every record's inactivity timeout: the reads that kept records alive were
//! served by the old leader, so a record may outlive its timeout by up to one timeout after a
//! failover, never expire early.
//!
//! The authority is handed to the record service before Raft starts: while a restarted member
//! applies its log again, no record expires on its own, even one whose lifetime has run out
//! (the leader's timers destroy it through the log).
//!
//! Expiry handlers are not in the log: a member subscribes a handler and tells every other
//! member (`router::tell_members`). A member that joins later (or comes back after a
//! restart) learns the handlers subscribed before from another member ([`learn_handlers`]:
//! `subscriptions` to its endpoint), once it counts in the cluster and again a little later
//! (a subscription made while it joined may have missed it), so a rolling restart of every
//! member keeps them.

use super::Cluster;
use crate::node::Mailbox;
use crate::record::RecordService;
use crate::record::expiry::ExpiryAuthority;
use crate::term::Pid;
use crate::term::{Atom, Value};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// The cluster's say on expiries.
pub struct LeaderExpires {
    cluster: OnceLock<Weak<Cluster>>,
}

impl LeaderExpires {
    /// Hands the expiries of `records` to the cluster's leader (none acts until
    /// [`LeaderExpires::install`] names the cluster).
    pub fn hold(records: &RecordService) -> Arc<LeaderExpires> {
        let authority = Arc::new(LeaderExpires {
            cluster: OnceLock::new(),
        });
        records.set_expiry_authority(authority.clone());
        authority
    }

    fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.get().and_then(Weak::upgrade)
    }

    /// Gives the expiries of `records` to `cluster`'s leader, and restarts inactivity timeouts
    /// whenever this member becomes leader.
    pub fn install(&self, cluster: &Arc<Cluster>, records: &Arc<RecordService>) {
        let _ = self.cluster.set(Arc::downgrade(cluster));
        let mut watch = cluster.watch();
        let weak = Arc::downgrade(cluster);
        let records = Arc::downgrade(records);
        tokio::spawn(async move {
            let mut leading = false;
            loop {
                let (Some(cluster), Some(records)) = (weak.upgrade(), records.upgrade()) else {
                    return;
                };
                if !cluster.changed(&mut watch).await {
                    return;
                }
                let now = cluster.is_leader();
                if now && !leading {
                    records.touch_all();
                    tracing::info!("leading the cluster: record inactivity timeouts restarted");
                }
                leading = now;
            }
        });
    }
}

impl ExpiryAuthority for LeaderExpires {
    fn acts(&self) -> bool {
        self.cluster().is_some_and(|c| c.is_leader())
    }

    fn remove(&self, resource: Atom, tenant: Option<Value>, pk: Value) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let namespace = match tenant {
            Some(tenant) => Value::pair(Value::Atom(resource), tenant),
            None => Value::Atom(resource),
        };
        let destroy = Value::tuple(vec![
            Value::Atom(Atom::from_static("destroy")),
            namespace,
            pk,
        ]);
        tokio::spawn(async move {
            let mailbox = Mailbox::new(&cluster.node);
            let answer = mailbox
                .call(&cluster.names.router, destroy, Duration::from_secs(30))
                .await;
            tracing::debug!(?answer, "destroyed an expired record through the cluster");
        });
    }
}

/// How long after it first learned the expiry handlers a member asks once more.
const RELEARN_AFTER: Duration = Duration::from_secs(10);

/// How long a member waits for another's list of expiry handlers.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// How far a member has learned the expiry handlers subscribed before it joined.
#[derive(Default)]
pub struct HandlersLearned {
    /// When it first learned them (`None`: not yet).
    first: std::sync::Mutex<Option<std::time::Instant>>,
    /// Learned twice: nothing more to ask.
    done: std::sync::atomic::AtomicBool,
}

impl HandlersLearned {
    /// Whether this member has learned the handlers at least once (or had nobody to learn
    /// them from): before, what it knows may be only what was subscribed since it joined.
    fn once(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::Acquire)
            || self.first.lock().expect("not poisoned").is_some()
    }
}

/// The endpoint's answer to `subscriptions`: `{ok, [{Pid, all | [Resource]}]}`, the expiry
/// handlers subscribed on this member; `{error, leaving}` from a member that is stopping (it
/// drops its handlers as its connections close) and `{error, learning}` from one that has not
/// learned them yet (it joined a moment ago): either could answer with fewer than the
/// cluster's, and the member asking takes the first answer for the cluster's.
pub fn handlers_reply(cluster: &Cluster) -> Value {
    let refuse = |why| {
        Value::pair(
            Value::Atom(Atom::from_static("error")),
            Value::Atom(Atom::from_static(why)),
        )
    };
    if cluster.leaving.load(std::sync::atomic::Ordering::Acquire) {
        refuse("leaving")
    } else if !cluster.handlers_learned.once() {
        refuse("learning")
    } else {
        encode_handlers(cluster.records.expiry_handlers())
    }
}

/// Whether `reply` is a member's `{error, learning}` ([`handlers_reply`]).
fn still_learning(reply: &Value) -> bool {
    matches!(reply.as_tuple(), Some([tag, why])
        if tag.as_atom().map(|a| a.as_str()) == Some("error")
            && why.as_atom().map(|a| a.as_str()) == Some("learning"))
}

/// An expiry handler's resources as members pass them on: `all` (`None`) or `[Resource]`.
pub fn handled_resources(resources: Option<&[Atom]>) -> Value {
    match resources {
        Some(list) => Value::list(list.iter().map(|r| Value::Atom(*r)).collect()),
        None => Value::Atom(Atom::from_static("all")),
    }
}

fn encode_handlers(handlers: Vec<(Pid, Option<Vec<Atom>>)>) -> Value {
    let handlers = handlers
        .into_iter()
        .map(|(pid, resources)| {
            Value::pair(
                Value::Pid(Box::new(pid)),
                handled_resources(resources.as_deref()),
            )
        })
        .collect();
    Value::pair(Value::Atom(Atom::from_static("ok")), Value::list(handlers))
}

/// The handlers of a [`handlers_reply`]; `None` for anything else.
fn parse_handlers(reply: &Value) -> Option<Vec<(Pid, Option<Vec<Atom>>)>> {
    let [tag, list] = reply.as_tuple()? else {
        return None;
    };
    if tag.as_atom().map(|a| a.as_str()) != Some("ok") {
        return None;
    }
    list.as_list()?
        .iter()
        .map(|entry| match entry.as_tuple()? {
            [Value::Pid(pid), resources] => {
                let resources = match resources.as_atom() {
                    Some(all) if all.as_str() == "all" => None,
                    _ => Some(
                        resources
                            .as_list()?
                            .iter()
                            .map(Value::as_atom)
                            .collect::<Option<Vec<Atom>>>()?,
                    ),
                };
                Some((**pid, resources))
            }
            _ => None,
        })
        .collect()
}

/// Learns the expiry handlers another member knows and this one does not (subscribed before it
/// joined): once this member counts in the cluster, and once more 10 s later.
/// A handler this member already knows keeps what it was told directly (newer). Called once a
/// second by [`super::membership::keep_voters`]; does nothing once done.
pub async fn learn_handlers(cluster: &Arc<Cluster>, mailbox: &Mailbox) {
    let learned = &cluster.handlers_learned;
    if learned.done.load(std::sync::atomic::Ordering::Acquire) {
        return;
    }
    let first = *learned.first.lock().expect("not poisoned");
    if first.is_some_and(|at| at.elapsed() < RELEARN_AFTER) {
        return;
    }
    let me = cluster.node.config.name.to_string();
    let everyone = super::holders::everyone(cluster);
    if !everyone.contains(&me) {
        return; // not in the cluster yet
    }
    let peers = everyone
        .iter()
        .filter(|name| **name != me && cluster.node.conn(name).is_some());
    let mut answered = everyone.len() == 1; // alone: nobody to learn from
    let (mut asked, mut learning) = (0, 0);
    for name in peers {
        let Ok(peer) = name.parse() else { continue };
        let reply = mailbox
            .call_remote(
                &peer,
                &cluster.names.endpoint,
                Value::Atom(Atom::from_static("subscriptions")),
                ASK_TIMEOUT,
            )
            .await;
        asked += 1;
        let Some(handlers) = reply.as_ref().ok().and_then(parse_handlers) else {
            if reply.as_ref().is_ok_and(still_learning) {
                learning += 1;
            }
            tracing::debug!(member = %name, ?reply, "could not learn the expiry handlers");
            continue;
        };
        let known: Vec<Pid> = cluster
            .records
            .expiry_handlers()
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        for (pid, resources) in handlers {
            if known.contains(&pid) {
                continue;
            }
            if let Ok(node) = pid.node.as_str().parse() {
                let _ = tokio::time::timeout(ASK_TIMEOUT, cluster.node.connect(&node)).await;
            }
            tracing::info!(handler = %pid, from = %name, group = cluster.options.group, "learned an expiry handler");
            cluster.records.subscribe_expiry(pid, resources);
        }
        answered = true;
        break;
    }
    // Every member reachable is learning too (the whole cluster restarted): none knows a
    // handler that was not subscribed since, and those were told to every member.
    answered |= asked > 0 && learning == asked;
    if answered {
        let mut first = learned.first.lock().expect("not poisoned");
        if first.is_some() {
            learned
                .done
                .store(true, std::sync::atomic::Ordering::Release);
        } else {
            *first = Some(std::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_handlers_reads_back_as_sent() {
        let pid = |id| Pid {
            node: Atom::from_static("app@127.0.0.1"),
            id,
            serial: 0,
            creation: 7,
        };
        let handlers = vec![
            (pid(1), None),
            (
                pid(2),
                Some(vec![
                    Atom::from_static("Elixir.Post"),
                    Atom::from_static("Elixir.User"),
                ]),
            ),
            (pid(3), Some(vec![])),
        ];
        assert_eq!(
            parse_handlers(&encode_handlers(handlers.clone())),
            Some(handlers)
        );
        assert_eq!(parse_handlers(&encode_handlers(vec![])), Some(vec![]));
    }

    #[test]
    fn anything_else_is_no_list() {
        let ok = Value::Atom(Atom::from_static("ok"));
        let error = Value::pair(
            Value::Atom(Atom::from_static("error")),
            Value::Atom(Atom::from_static("no_cluster")),
        );
        assert_eq!(parse_handlers(&error), None);
        assert_eq!(parse_handlers(&ok), None);
        let not_a_pid = Value::pair(
            ok.clone(),
            Value::list(vec![Value::pair(Value::Int(1), ok.clone())]),
        );
        assert_eq!(parse_handlers(&not_a_pid), None);
        let bad_resource = Value::pair(
            ok.clone(),
            Value::list(vec![Value::pair(
                Value::Pid(Box::new(Pid {
                    node: Atom::from_static("a@b"),
                    id: 1,
                    serial: 0,
                    creation: 1,
                })),
                Value::list(vec![Value::Int(3)]),
            )]),
        );
        assert_eq!(parse_handlers(&bad_resource), None);
    }

    #[test]
    fn only_a_learning_member_s_refusal_counts_as_learning() {
        let error = |why| {
            Value::pair(
                Value::Atom(Atom::from_static("error")),
                Value::Atom(Atom::from_static(why)),
            )
        };
        assert!(still_learning(&error("learning")));
        assert!(!still_learning(&error("leaving")));
        assert!(!still_learning(&encode_handlers(vec![])));
        assert!(!still_learning(&Value::Atom(Atom::from_static("learning"))));
    }
}
