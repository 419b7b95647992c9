//! The front router of a member whose records are split into `S` Raft groups (`start --shards
//! S`, S > 1): registered as `ash_gen_server`, it serves every request of docs/PROTOCOL.md as
//! a single node holding every record would, by sending it on to the groups' routers
//! (`ash_gen_server_group_G`, [`super::Names::of`]) on this member. Each group router does
//! what a member of one group does (the leader, forwarding, retries, request ids applied once
//! per group), so the same client request id may reach several groups.
//!
//! Where a request goes ([`route_of`]):
//!
//! - `get`, `update`, `destroy`, `whereis`, `keep_alive` (call and cast), `fault`, `create`,
//!   `upsert`: to the group of the record, [`group_of`]: [`super::placement::shard_of`] of the
//!   resource and the primary key (the key fields of the record for `create` and `upsert`;
//!   with a tenant, of `{Tenant, PK}`). A resource that declares identities keeps every record
//!   in one group (that of a `nil` key), so identities are checked, and upserts by identity
//!   served, atomically, as on a single node. A resource not defined goes to group 0 (which
//!   answers as a single node does).
//! - `query`, `aggregate`, `update_where`, `destroy_where`: [`super::fanout`] over the groups,
//!   each group's requests sent concurrently.
//! - `bulk_create`: the records split by group, one `bulk_create` per group concurrently, the
//!   replies put back in the records' order. With `all_or_nothing => true` each group's part is
//!   all or nothing; when a group refuses its part, the groups that created theirs remove it
//!   again (`destroy_where` by primary key) and the reply is the single node's, the refusal of
//!   the batch's first refused record ([`first_refusal`]). Readers may see such a part for the
//!   moment between. A group that cannot answer (no majority) refuses nothing: its error is the
//!   reply and the parts created stay, for the client's retry with the same request id to
//!   complete. A resource with identities never spans groups.
//! - `define`: every group in turn, group 0 first; the first error, else group 0's reply.
//!   `clear`: every group, the counts added up. `info`: every group, `count` added up, the rest
//!   group 0's. `subscribe`, `unsubscribe`: every group (the reply group 0's).
//! - `resources`: group 0. `ping`: `pong`. `stats`: group 0's with `records` and
//!   `record_pids` added up over the groups this member holds ([`super::holders`]: a group is
//!   held by `--replicas` members only). `cluster`: group 0's description with `shards => S`,
//!   `healthy` (every group healthy) and `groups`, each group's leader, health and holders.
//!
//! A resource's primary key, identities and types (where its records go, and a fan-out's
//! [`Shape`]) are read from this member's replica of group 0; one that does not know the
//! resource yet (a `define` acknowledged a moment ago through another member) asks group 0's
//! leader and waits for its replica to apply the definition.
//!
//! A request that does not parse is answered as a single node answers it.

use super::Cluster;
use super::answer::{is_error, ok_body};
use super::fanout::{Fanout, Shape, Step};
use super::placement::shard_of;
use crate::node::genserver::{self, From};
use crate::node::{Mailbox, Node, Process};
use crate::protocol::args::ResourceRef;
use crate::protocol::error::Error;
use crate::protocol::request::{REQUEST_ID_TAG, Request, split_request_id};
use crate::record::RecordService;
use crate::record::registry::ResourceConfig;
use crate::term::{Atom, Pid, Record, Value};
use arc_swap::Guard;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long the front router waits for a group router's answer (a group router waits up to
/// 10 s for a leader, and 30 s for a forwarded request).
const GROUP_CALL: Duration = Duration::from_secs(60);

/// Where the front router sends a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To this group's router, as it is.
    One(u32),
    /// To every group ([`Combine`] says how the replies make one).
    Every(Combine),
    /// [`super::fanout`] over the groups.
    Fanout,
    /// Split by group ([`split_bulk`]).
    Bulk,
    /// `ping`: answered here.
    Ping,
    /// `cluster`: described here.
    Cluster,
    /// `stats`: group 0's, with counts added up.
    Stats,
}

/// How the replies of every group make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// `define`: in turn, group 0 first; the first error, else group 0's reply.
    Define,
    /// `clear`: the counts added up.
    Clear,
    /// `info`: `count` added up.
    Info,
    /// `subscribe`, `unsubscribe`: group 0's reply.
    Subscription,
}

/// The group of the record of `resource` with primary-key map (or record) `key` among
/// `shards` groups, for a resource configured as `config` (`None`: not defined, group 0).
pub fn group_of(
    resource: &ResourceRef,
    key: &Value,
    config: Option<&ResourceConfig>,
    shards: u32,
) -> u32 {
    let Some(config) = config else { return 0 };
    let pk = if config.identities.is_empty() {
        Value::map(
            config
                .primary_key
                .iter()
                .map(|f| {
                    let v = key.map_get_atom(*f).cloned().unwrap_or_else(Value::nil);
                    (Value::Atom(*f), v)
                })
                .collect(),
        )
    } else {
        Value::nil()
    };
    let pk = match &resource.tenant {
        Some(tenant) => Value::pair(tenant.clone(), pk),
        None => pk,
    };
    shard_of(resource.name, &pk, shards)
}

/// The group of a record given as a [`Record`].
fn group_of_record(
    resource: &ResourceRef,
    record: &Record,
    config: Option<&ResourceConfig>,
    shards: u32,
) -> u32 {
    group_of(resource, &record.to_value(), config, shards)
}

/// Where `request` goes among `shards` groups; `config` gives a resource's configuration (the
/// local group 0's definition), `None` when it is not defined.
pub fn route_of(
    request: &Request,
    shards: u32,
    config: &dyn Fn(&ResourceRef) -> Option<Arc<ResourceConfig>>,
) -> Route {
    let keyed = |resource: &ResourceRef, key: &Value| {
        let config = config(resource);
        if key.as_map().is_none() {
            // Not a key: answered with the single node's error.
            return Route::One(0);
        }
        Route::One(group_of(resource, key, config.as_deref(), shards))
    };
    let record = |resource: &ResourceRef, record: &Record| {
        Route::One(group_of_record(
            resource,
            record,
            config(resource).as_deref(),
            shards,
        ))
    };
    match request {
        Request::Get(r) => keyed(&r.resource, &r.pk),
        Request::Update(r) => keyed(&r.resource, &r.pk),
        Request::Destroy(r) => keyed(&r.resource, &r.pk),
        Request::Whereis(r) => keyed(&r.resource, &r.pk),
        Request::KeepAlive(r) => keyed(&r.resource, &r.pk),
        Request::Fault(r) => keyed(&r.resource, &r.pk),
        Request::Create(r) => record(&r.resource, &r.record),
        Request::Upsert(r) => record(&r.resource, &r.record),
        Request::BulkCreate(_) => Route::Bulk,
        Request::Query(_)
        | Request::Aggregate(_)
        | Request::UpdateWhere(_)
        | Request::DestroyWhere(_) => Route::Fanout,
        Request::Define(_) => Route::Every(Combine::Define),
        Request::Clear(_) => Route::Every(Combine::Clear),
        Request::Info(_) => Route::Every(Combine::Info),
        Request::Subscribe(_) | Request::Unsubscribe => Route::Every(Combine::Subscription),
        Request::Resources => Route::One(0),
        Request::Ping => Route::Ping,
        Request::Cluster => Route::Cluster,
        Request::Stats => Route::Stats,
    }
}

/// The resource a request placed by its record (or records) names.
fn resource_of(request: &Request) -> Option<&ResourceRef> {
    match request {
        Request::Get(r) => Some(&r.resource),
        Request::Update(r) => Some(&r.resource),
        Request::Destroy(r) => Some(&r.resource),
        Request::Whereis(r) => Some(&r.resource),
        Request::KeepAlive(r) => Some(&r.resource),
        Request::Fault(r) => Some(&r.resource),
        Request::Create(r) => Some(&r.resource),
        Request::Upsert(r) => Some(&r.resource),
        _ => None,
    }
}

/// The records of a `bulk_create` by group: `(group, [place in the request])`, by group.
pub fn split_bulk(
    resource: &ResourceRef,
    records: &[Record],
    config: Option<&ResourceConfig>,
    shards: u32,
) -> Vec<(u32, Vec<usize>)> {
    let mut by: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, record) in records.iter().enumerate() {
        by.entry(group_of_record(resource, record, config, shards))
            .or_default()
            .push(i);
    }
    by.into_iter().collect()
}

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

/// Of the shards' replies to the parts of an `all_or_nothing` `bulk_create` (`split`), the
/// refusal a single node holding every record would give: `{error, {record, N, Reason}}` of
/// the lowest `N` over the whole batch (each shard names its own first refused record). `None`
/// when no shard refused (every part created, or a shard that could not answer: its part may
/// be in, so nothing is removed).
pub fn first_refusal(split: &[(u32, Vec<usize>)], replies: &[Value]) -> Option<Value> {
    split
        .iter()
        .zip(replies)
        .filter_map(|((_, places), reply)| {
            let [tag, why] = reply.as_tuple()? else {
                return None;
            };
            let [what, n, reason] = why.as_tuple()? else {
                return None;
            };
            if tag.as_atom()?.as_str() != "error" || what.as_atom()?.as_str() != "record" {
                return None;
            }
            let local = usize::try_from(n.as_int()?).ok()?.checked_sub(1)?;
            Some((*places.get(local)?, reason.clone()))
        })
        .min_by_key(|(place, _)| *place)
        .map(|(place, reason)| {
            Value::pair(
                atom("error"),
                Value::tuple(vec![atom("record"), Value::Int(place as i64 + 1), reason]),
            )
        })
}

/// A filter matching exactly the records `created` (`{ok, Record}` each) by their
/// `primary_key`: `{in, Field, Keys}` for a key of one field, a balanced tree of `'or'` over
/// `'and'`s of `eq` otherwise (its depth grows as the log of the count). `None` when nothing
/// was created, or a key cannot be read.
pub fn keys_filter(created: &[Value], primary_key: &[Atom]) -> Option<Value> {
    let keys: Vec<Vec<Value>> = created
        .iter()
        .map(|item| {
            let record = ok_body(item)?;
            primary_key
                .iter()
                .map(|f| record.map_get_atom(*f).cloned())
                .collect::<Option<Vec<Value>>>()
        })
        .collect::<Option<_>>()?;
    if keys.is_empty() || primary_key.is_empty() {
        return None;
    }
    if let [field] = primary_key {
        let values = keys.into_iter().map(|mut k| k.remove(0)).collect();
        return Some(Value::tuple(vec![
            atom("in"),
            Value::Atom(*field),
            Value::list(values),
        ]));
    }
    let each: Vec<Value> = keys
        .into_iter()
        .map(|key| {
            let eqs = primary_key
                .iter()
                .zip(key)
                .map(|(f, v)| Value::tuple(vec![atom("eq"), Value::Atom(*f), v]))
                .collect();
            balanced("and", eqs)
        })
        .collect();
    Some(balanced("or", each))
}

/// `{Op, A, B}` over `items` (at least one) as a balanced tree: depth log2 of their count.
fn balanced(op: &'static str, mut items: Vec<Value>) -> Value {
    if items.len() == 1 {
        return items.pop().expect("one item");
    }
    let right = items.split_off(items.len() / 2);
    Value::tuple(vec![atom(op), balanced(op, items), balanced(op, right)])
}

fn unavailable(text: impl Into<String>) -> Value {
    Error::Unavailable(text.into()).to_reply()
}

/// The map `map` with `value` under `key` (replacing what was there).
fn map_with(map: &Value, key: &'static str, value: Value) -> Value {
    let mut entries: Vec<(Value, Value)> = map
        .as_map()
        .unwrap_or_default()
        .iter()
        .filter(|(k, _)| k.as_atom().is_none_or(|a| a.as_str() != key))
        .cloned()
        .collect();
    entries.push((atom(key), value));
    Value::map(entries)
}

/// Adds up the integers under `key` in the `{ok, Map}` replies.
fn sum_of(replies: &[Value], key: &'static str) -> i64 {
    replies
        .iter()
        .filter_map(ok_body)
        .filter_map(|m| m.map_get_atom(Atom::from_static(key)))
        .filter_map(Value::as_int)
        .sum()
}

/// `{request_id, Id, Request}` when the client gave an id (one id per group and step, derived
/// from the client's, so a retry of the client's request asks the same ids again), else the
/// request as it is.
fn with_id(client: Option<u64>, salt: &[u64], request: Value) -> Value {
    match client {
        None => request,
        Some(id) => {
            let mut bytes = Vec::with_capacity(8 * (salt.len() + 1));
            bytes.extend_from_slice(&id.to_be_bytes());
            for s in salt {
                bytes.extend_from_slice(&s.to_be_bytes());
            }
            let derived = xxhash_rust::xxh3::xxh3_64(&bytes) >> 1;
            Value::tuple(vec![
                Value::Atom(Atom::from_static(REQUEST_ID_TAG)),
                Value::Int(derived as i64),
                request,
            ])
        }
    }
}

struct Front {
    node: Arc<Node>,
    groups: Vec<Weak<Cluster>>,
    /// The groups' router names.
    routers: Vec<String>,
    /// Group 0's record service (its definitions say where records go).
    records: Arc<RecordService>,
}

/// Registers the front router as `ash_gen_server` on `node`, over `groups` (group `G` at `G`).
pub fn register(node: &Arc<Node>, groups: &[Arc<Cluster>]) -> Result<Pid, super::ClusterError> {
    let front = Arc::new(Front {
        node: node.clone(),
        groups: groups.iter().map(Arc::downgrade).collect(),
        routers: groups.iter().map(|g| g.names.router.clone()).collect(),
        records: groups[0].records.clone(),
    });
    node.register(crate::protocol::SERVER_NAME, |_| -> Arc<dyn Process> {
        Arc::new(Handle(front))
    })
    .ok_or_else(|| super::ClusterError::NameTaken(crate::protocol::SERVER_NAME.to_string()))
}

struct Handle(Arc<Front>);

impl Front {
    fn shards(&self) -> u32 {
        self.groups.len() as u32
    }

    fn config(&self, resource: &ResourceRef) -> Option<Arc<ResourceConfig>> {
        self.records
            .store
            .get_in(resource.name, resource.tenant.as_ref())
            .ok()
            .map(|r| Guard::into_inner(r.config()))
    }

    /// The configuration of `resource`, as the cluster knows it: this member's replica of
    /// group 0 may not have applied a `define` acknowledged a moment ago (on another member):
    /// when it does not know the resource, group 0's leader is asked (`info`, a linearizable
    /// read), and if it knows it, this member waits for its replica to apply the definition.
    async fn config_fresh(&self, resource: &ResourceRef) -> Option<Arc<ResourceConfig>> {
        if let Some(config) = self.config(resource) {
            return Some(config);
        }
        let info = Value::pair(atom("info"), Value::Atom(resource.name));
        if is_error(&self.ask(0, info).await) {
            return None;
        }
        // Group 0's replica here applies it soon: looked at again on each change of its
        // metrics (an entry applied, say).
        let mut metrics = self.groups[0].upgrade()?.raft().metrics();
        let wait = async {
            loop {
                if let Some(config) = self.config(resource) {
                    return Some(config);
                }
                metrics.changed().await.ok()?;
            }
        };
        tokio::time::timeout(super::router::LEADER_WAIT, wait)
            .await
            .ok()
            .flatten()
    }

    fn max_records(&self) -> usize {
        self.node.config.limits.max_records_per_request
    }

    /// Passes the call on to group `group`'s router, which replies to the client.
    fn pass(&self, group: u32, from: &From, request: Value) {
        match self.node.whereis(&self.routers[group as usize]) {
            Some(pid) => {
                self.node
                    .send(&pid, &genserver::call_message(from, request));
            }
            None => self.node.reply(
                from,
                &unavailable(format!("group {group}'s router is not running")),
            ),
        }
    }

    /// Calls group `group`'s router with `request` and returns its reply.
    async fn ask(&self, group: u32, request: Value) -> Value {
        let mailbox = Mailbox::new(&self.node);
        match mailbox
            .call(&self.routers[group as usize], request, GROUP_CALL)
            .await
        {
            Ok(reply) => reply,
            Err(e) => unavailable(format!("group {group} did not answer: {e}")),
        }
    }

    /// Asks every group of `asks` its requests (each group's in order, the groups at once).
    async fn ask_all(self: &Arc<Self>, asks: Vec<(u32, Vec<Value>)>) -> Vec<Vec<Value>> {
        let mut tasks = Vec::with_capacity(asks.len());
        for (group, requests) in asks {
            let front = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut replies = Vec::with_capacity(requests.len());
                for request in requests {
                    replies.push(front.ask(group, request).await);
                }
                replies
            }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(
                task.await
                    .unwrap_or_else(|e| vec![unavailable(format!("a group's call failed: {e}"))]),
            );
        }
        out
    }

    async fn serve(self: Arc<Self>, from: From, message: Value) {
        let reply = self.answer(&from, message).await;
        if let Some(reply) = reply {
            self.node.reply(&from, &reply);
        }
    }

    /// The reply to the call `message`, or `None` when a group router replies to the client.
    async fn answer(self: &Arc<Self>, from: &From, message: Value) -> Option<Value> {
        let (client, request) = match split_request_id(&message) {
            Ok((id, request)) => (id, request.clone()),
            Err(e) => return Some(e.to_reply()),
        };
        let parsed = match Request::parse_with(&request, self.max_records()) {
            Ok(parsed) => parsed,
            Err(e) => return Some(e.to_reply()),
        };
        let shards = self.shards();
        let config = match resource_of(&parsed) {
            Some(resource) => self.config_fresh(resource).await,
            None => None,
        };
        match route_of(&parsed, shards, &|_| config.clone()) {
            Route::One(group) => {
                self.pass(group, from, message);
                None
            }
            Route::Ping => Some(atom("pong")),
            Route::Cluster => Some(self.cluster().await),
            Route::Stats => Some(self.stats().await),
            Route::Fanout => Some(self.fanout(client, &request).await),
            Route::Bulk => match parsed {
                Request::BulkCreate(bulk) => {
                    self.bulk(client, from, &message, &request, bulk).await
                }
                _ => unreachable!("a bulk route is a bulk_create"),
            },
            Route::Every(Combine::Subscription) => {
                self.subscription(from, &parsed).await;
                self.pass(0, from, message);
                None
            }
            Route::Every(Combine::Define) => {
                let mut first = None;
                for group in 0..shards {
                    let reply = self.ask(group, message.clone()).await;
                    if is_error(&reply) {
                        return Some(reply);
                    }
                    first.get_or_insert(reply);
                }
                first
            }
            Route::Every(combine) => {
                let replies: Vec<Value> = self
                    .ask_all((0..shards).map(|g| (g, vec![message.clone()])).collect())
                    .await
                    .into_iter()
                    .map(|mut r| r.pop().unwrap_or_else(|| unavailable("no reply")))
                    .collect();
                if let Some(e) = replies.iter().find(|r| is_error(r)) {
                    return Some(e.clone());
                }
                Some(match combine {
                    Combine::Clear => {
                        let n: i64 = replies
                            .iter()
                            .filter_map(ok_body)
                            .filter_map(Value::as_int)
                            .sum();
                        Value::pair(atom("ok"), Value::Int(n))
                    }
                    _ => {
                        let count = sum_of(&replies, "count");
                        match ok_body(&replies[0]) {
                            Some(map) => {
                                Value::pair(atom("ok"), map_with(map, "count", Value::Int(count)))
                            }
                            None => replies[0].clone(),
                        }
                    }
                })
            }
        }
    }

    /// Subscribes (or unsubscribes) the caller in the groups other than 0 (group 0's router is
    /// passed the call itself).
    async fn subscription(&self, from: &From, parsed: &Request) {
        for group in self.groups.iter().skip(1) {
            let Some(cluster) = group.upgrade() else {
                continue;
            };
            let message = match parsed {
                Request::Subscribe(s) if s.0.as_ref().is_none_or(|l| !l.is_empty()) => {
                    cluster.records.subscribe_expiry(from.pid, s.0.clone());
                    Value::tuple(vec![
                        atom("subscribe_for"),
                        Value::Pid(Box::new(from.pid)),
                        super::expiry::handled_resources(s.0.as_deref()),
                    ])
                }
                _ => {
                    cluster.records.unsubscribe_expiry(&from.pid);
                    Value::pair(atom("unsubscribe_for"), Value::Pid(Box::new(from.pid)))
                }
            };
            super::router::tell_members(&cluster, message).await;
        }
    }

    /// `{ok, Info}`: group 0's description, with every group's leader, health and holders
    /// (each group's `cluster`, from a member holding it).
    async fn cluster(self: &Arc<Self>) -> Value {
        let Some(zero) = self.groups[0].upgrade() else {
            return unavailable("the cluster is stopping");
        };
        let info = super::membership::info(&zero).await;
        let replies = self
            .ask_all(
                (0..self.shards())
                    .map(|g| (g, vec![atom("cluster")]))
                    .collect(),
            )
            .await;
        let mut healthy = true;
        let mut groups = Vec::with_capacity(replies.len());
        for (g, mut reply) in replies.into_iter().enumerate() {
            let reply = reply.pop().unwrap_or_else(|| unavailable("no reply"));
            let field = |key: &'static str| {
                ok_body(&reply).and_then(|m| m.map_get_atom(Atom::from_static(key)).cloned())
            };
            let ok = field("healthy") == Some(Value::boolean(true));
            healthy &= ok;
            groups.push(Value::map(vec![
                (atom("group"), Value::Int(g as i64)),
                (
                    atom("leader"),
                    field("leader").unwrap_or_else(|| atom("undefined")),
                ),
                (atom("healthy"), Value::boolean(ok)),
                (
                    atom("holders"),
                    field("voters").unwrap_or_else(|| Value::list(Vec::new())),
                ),
                // Group 0 is on every member; another group is settled when its voters are
                // the holders placement chose (no move under way).
                (
                    atom("settled"),
                    Value::boolean(g == 0 || field("settled") == Some(Value::boolean(true))),
                ),
            ]));
        }
        let info = map_with(&info, "shards", Value::Int(self.groups.len() as i64));
        let info = map_with(&info, "healthy", Value::boolean(healthy));
        let info = map_with(&info, "groups", Value::list(groups));
        Value::pair(atom("ok"), info)
    }

    /// Group 0's `stats`, `records` and `record_pids` added up over the groups.
    async fn stats(self: &Arc<Self>) -> Value {
        let replies: Vec<Value> = self
            .ask_all(
                (0..self.shards())
                    .map(|g| (g, vec![atom("stats")]))
                    .collect(),
            )
            .await
            .into_iter()
            .map(|mut r| r.pop().unwrap_or_else(|| unavailable("no reply")))
            .collect();
        match ok_body(&replies[0]) {
            Some(map) => {
                let map = map_with(map, "records", Value::Int(sum_of(&replies, "records")));
                let map = map_with(
                    &map,
                    "record_pids",
                    Value::Int(sum_of(&replies, "record_pids")),
                );
                Value::pair(atom("ok"), map)
            }
            None => replies[0].clone(),
        }
    }

    /// A query, aggregate, update_where or destroy_where over every group.
    async fn fanout(self: &Arc<Self>, client: Option<u64>, request: &Value) -> Value {
        let resource = request
            .as_tuple()
            .and_then(|t| t.get(1))
            .and_then(|r| crate::protocol::args::resource(r).ok());
        let config = match &resource {
            Some(r) => self.config_fresh(r).await,
            None => None,
        };
        let shape = Shape {
            primary_key: config
                .as_ref()
                .map(|c| c.primary_key.clone())
                .unwrap_or_default(),
            types: config.as_ref().map(|c| c.types.clone()).unwrap_or_default(),
            max_records: self.max_records(),
            lifetimes: config.as_ref().is_some_and(|c| c.has_lifetimes()),
        };
        let Some((mut fanout, mut step)) = Fanout::start(request, shape, self.groups.len()) else {
            return unavailable("not a request to fan out");
        };
        let mut round = 0u64;
        loop {
            match step {
                Step::Reply(reply) => return reply,
                Step::Ask(asks) => {
                    let asks = asks
                        .into_iter()
                        .enumerate()
                        .map(|(g, requests)| {
                            let requests = requests
                                .into_iter()
                                .enumerate()
                                .map(|(i, r)| with_id(client, &[round, g as u64, i as u64], r))
                                .collect();
                            (g as u32, requests)
                        })
                        .collect();
                    let replies = self.ask_all(asks).await;
                    step = fanout.next(replies);
                    round += 1;
                }
            }
        }
    }

    /// A `bulk_create`: one per group, the replies put back in order.
    async fn bulk(
        self: &Arc<Self>,
        client: Option<u64>,
        from: &From,
        message: &Value,
        request: &Value,
        bulk: crate::protocol::cmd::bulk_create::BulkCreate,
    ) -> Option<Value> {
        let config = self.config_fresh(&bulk.resource).await;
        let split = split_bulk(
            &bulk.resource,
            &bulk.records,
            config.as_deref(),
            self.shards(),
        );
        if split.len() <= 1 {
            let group = split.first().map_or(0, |(g, _)| *g);
            self.pass(group, from, message.clone());
            return None;
        }
        let args = request.as_tuple().expect("a parsed request is a tuple");
        let list = args[2].as_list().expect("a parsed bulk_create has a list");
        let asks = split
            .iter()
            .map(|(g, places)| {
                let mut sub = vec![
                    args[0].clone(),
                    args[1].clone(),
                    Value::list(places.iter().map(|&i| list[i].clone()).collect()),
                ];
                if let Some(opts) = args.get(3) {
                    sub.push(opts.clone());
                }
                (
                    *g,
                    vec![with_id(client, &[u64::from(*g)], Value::tuple(sub))],
                )
            })
            .collect();
        let replies: Vec<Value> = self
            .ask_all(asks)
            .await
            .into_iter()
            .map(|mut r| r.pop().unwrap_or_else(|| unavailable("no reply")))
            .collect();
        if bulk.all_or_nothing
            && let Some(refused) = first_refusal(&split, &replies)
        {
            // Refused by a shard: the shards that created their part remove it again.
            let primary_key = config.as_ref().map_or(&[][..], |c| &c.primary_key[..]);
            let undo: Vec<(u32, Vec<Value>)> = split
                .iter()
                .zip(&replies)
                .filter_map(|((g, _), reply)| {
                    let created = ok_body(reply)?.as_list()?;
                    let filter = keys_filter(created, primary_key)?;
                    let destroy = Value::tuple(vec![
                        atom("destroy_where"),
                        args[1].clone(),
                        Value::map(vec![(atom("filter"), filter)]),
                        Value::map(vec![(atom("return"), atom("count"))]),
                    ]);
                    Some((*g, vec![with_id(client, &[u64::from(*g), 1], destroy)]))
                })
                .collect();
            let groups: Vec<u32> = undo.iter().map(|(g, _)| *g).collect();
            for (reply, g) in self.ask_all(undo).await.iter().zip(groups) {
                if let Some(e) = reply.iter().find(|r| is_error(r)) {
                    tracing::warn!(group = g, error = ?e, "could not remove the created part of a refused all_or_nothing bulk_create");
                }
            }
            return Some(refused);
        }
        let mut out = vec![Value::nil(); list.len()];
        for ((_, places), reply) in split.iter().zip(replies) {
            match ok_body(&reply).and_then(Value::as_list) {
                Some(items) if items.len() == places.len() => {
                    for (&i, item) in places.iter().zip(items) {
                        out[i] = item.clone();
                    }
                }
                _ => return Some(reply),
            }
        }
        Some(Value::pair(atom("ok"), Value::list(out)))
    }
}

impl Process for Handle {
    fn deliver(&self, node: &Arc<Node>, _from: Option<Pid>, message: Value) {
        let front = self.0.clone();
        match genserver::classify(message) {
            genserver::GenMessage::Call(from, request) => {
                tokio::spawn(front.serve(from, request));
            }
            // `keep_alive` casts, to the record's group.
            genserver::GenMessage::Cast(request) => {
                let group = match Request::parse_with(&request, front.max_records()) {
                    Ok(parsed) => match route_of(&parsed, front.shards(), &|r| front.config(r)) {
                        Route::One(g) => g,
                        _ => 0,
                    },
                    Err(_) => 0,
                };
                if let Some(pid) = node.whereis(&front.routers[group as usize]) {
                    node.send(&pid, &genserver::cast_message(request));
                }
            }
            genserver::GenMessage::Info(message) => {
                tracing::debug!(?message, "the front router ignored a message")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::registry::Identity;
    use crate::term::parse_term;

    fn t(s: &str) -> Value {
        parse_term(s).unwrap()
    }

    fn route(request: &str, config: Option<ResourceConfig>) -> Route {
        let parsed = Request::parse_with(&t(request), 1000).unwrap();
        let config = config.map(Arc::new);
        route_of(&parsed, 4, &|_| config.clone())
    }

    fn by_id() -> ResourceConfig {
        ResourceConfig::new(vec![Atom::new("id").unwrap()])
    }

    fn with_identity() -> ResourceConfig {
        let mut c = by_id();
        c.identities = vec![Identity::new(t("email"), vec![Atom::new("email").unwrap()])];
        c
    }

    fn shard(resource: &str, pk: &str) -> u32 {
        shard_of(Atom::new(resource).unwrap(), &t(pk), 4)
    }

    #[test]
    fn keyed_requests_go_to_their_records_group() {
        let cfg = || Some(by_id());
        for id in 0..40 {
            let want = Route::One(shard("user", &format!("#{{id => {id}}}")));
            for request in [
                format!("{{get, user, #{{id => {id}}}}}"),
                format!("{{update, user, #{{id => {id}}}, #{{name => <<\"x\">>}}}}"),
                format!("{{destroy, user, #{{id => {id}}}}}"),
                format!("{{whereis, user, #{{id => {id}}}}}"),
                format!("{{keep_alive, user, #{{id => {id}}}}}"),
                format!("{{create, user, #{{id => {id}, name => <<\"a\">>}}}}"),
                format!("{{upsert, user, #{{id => {id}, name => <<\"a\">>}}, #{{}}}}"),
            ] {
                assert_eq!(route(&request, cfg()), want, "{request}");
            }
        }
        // Tenants: by `{Tenant, PK}`.
        assert_eq!(
            route("{get, {user, t1}, #{id => 1}}", cfg()),
            Route::One(shard_of(
                Atom::new("user").unwrap(),
                &t("{t1, #{id => 1}}"),
                4
            ))
        );
        // Not defined: group 0, which answers as a single node.
        assert_eq!(route("{get, user, #{id => 7}}", None), Route::One(0));
    }

    #[test]
    fn keys_spread_over_the_groups() {
        let groups: std::collections::BTreeSet<u32> = (0..100)
            .filter_map(|id| {
                match route(&format!("{{get, user, #{{id => {id}}}}}"), Some(by_id())) {
                    Route::One(g) => Some(g),
                    _ => None,
                }
            })
            .collect();
        assert_eq!(groups.len(), 4);
    }

    #[test]
    fn a_resource_with_identities_keeps_its_records_in_one_group() {
        let nil = Route::One(shard_of(Atom::new("user").unwrap(), &Value::nil(), 4));
        for id in 0..20 {
            assert_eq!(
                route(
                    &format!("{{create, user, #{{id => {id}, email => <<\"e\">>}}}}"),
                    Some(with_identity())
                ),
                nil
            );
            assert_eq!(
                route(
                    &format!("{{get, user, #{{id => {id}}}}}"),
                    Some(with_identity())
                ),
                nil
            );
        }
        let records: Vec<Record> = (0..20)
            .map(|id| Record::from_map(&t(&format!("#{{id => {id}}}"))).unwrap())
            .collect();
        let user = ResourceRef {
            name: Atom::new("user").unwrap(),
            tenant: None,
        };
        assert_eq!(
            split_bulk(&user, &records, Some(&with_identity()), 4).len(),
            1
        );
        let split = split_bulk(&user, &records, Some(&by_id()), 4);
        assert!(split.len() > 1);
        let mut all: Vec<usize> = split.iter().flat_map(|(_, p)| p.clone()).collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn other_requests() {
        let cfg = || Some(by_id());
        assert_eq!(route("{query, user, #{}}", cfg()), Route::Fanout);
        assert_eq!(
            route("{aggregate, user, #{}, [{c, count, nil, #{}}]}", cfg()),
            Route::Fanout
        );
        assert_eq!(
            route("{update_where, user, #{}, #{set => #{a => 1}}}", cfg()),
            Route::Fanout
        );
        assert_eq!(route("{destroy_where, user, #{}}", cfg()), Route::Fanout);
        assert_eq!(route("{bulk_create, user, [], #{}}", cfg()), Route::Bulk);
        assert_eq!(
            route("{define, user, #{primary_key => [id]}}", cfg()),
            Route::Every(Combine::Define)
        );
        assert_eq!(route("{clear, user}", cfg()), Route::Every(Combine::Clear));
        assert_eq!(route("{info, user}", cfg()), Route::Every(Combine::Info));
        assert_eq!(
            route("subscribe", cfg()),
            Route::Every(Combine::Subscription)
        );
        assert_eq!(
            route("unsubscribe", cfg()),
            Route::Every(Combine::Subscription)
        );
        assert_eq!(route("resources", cfg()), Route::One(0));
        assert_eq!(route("ping", cfg()), Route::Ping);
        assert_eq!(route("stats", cfg()), Route::Stats);
        assert_eq!(route("cluster", cfg()), Route::Cluster);
    }

    #[test]
    fn derived_request_ids_differ_per_step_and_stay_below_2_63() {
        let a = with_id(Some(5), &[0, 1, 0], atom("x"));
        let b = with_id(Some(5), &[0, 2, 0], atom("x"));
        assert_ne!(a, b);
        assert_eq!(a, with_id(Some(5), &[0, 1, 0], atom("x")));
        let id = a.as_tuple().unwrap()[1].as_int().unwrap();
        assert!(id >= 0);
        assert_eq!(with_id(None, &[1], atom("x")), atom("x"));
    }

    #[test]
    fn the_batchs_first_refused_record_is_named_whatever_its_shard() {
        // Records 0..6 in three groups; group 1 refuses its 2nd (place 4), group 2 its 1st
        // (place 5), group 0 created its part.
        let split = vec![(0, vec![0, 2]), (1, vec![1, 4]), (2, vec![5, 3])];
        let replies = vec![
            t("{ok, [{ok, #{id => 0}}, {ok, #{id => 2}}]}"),
            t("{error, {record, 2, already_exists}}"),
            t("{error, {record, 1, {missing_primary_key, [id]}}}"),
        ];
        assert_eq!(
            first_refusal(&split, &replies),
            Some(t("{error, {record, 5, already_exists}}"))
        );
        // Nothing refused: every part in, or a group that could not answer.
        let replies = vec![
            t("{ok, []}"),
            t("{error, {unavailable, <<\"no leader\">>}}"),
            t("{ok, []}"),
        ];
        assert_eq!(first_refusal(&split, &replies), None);
        // A place the group does not have is no refusal of this batch.
        let replies = vec![t("{ok, []}"), t("{error, {record, 3, x}}"), t("{ok, []}")];
        assert_eq!(first_refusal(&split, &replies), None);
    }

    #[test]
    fn created_records_are_matched_by_their_keys_only() {
        let id = [Atom::new("id").unwrap()];
        let created = t("[{ok, #{id => 1, n => 5}}, {ok, #{id => 2}}]");
        let created = created.as_list().unwrap();
        assert_eq!(keys_filter(created, &id), Some(t("{in, id, [1, 2]}")));
        let both = [Atom::new("a").unwrap(), Atom::new("b").unwrap()];
        let created =
            t("[{ok, #{a => 1, b => x}}, {ok, #{a => 2, b => y}}, {ok, #{a => 3, b => z}}]");
        assert_eq!(
            keys_filter(created.as_list().unwrap(), &both),
            Some(t("{'or', {'and', {eq, a, 1}, {eq, b, x}}, \
                 {'or', {'and', {eq, a, 2}, {eq, b, y}}, {'and', {eq, a, 3}, {eq, b, z}}}}"))
        );
        // Many keys: a tree of depth about log2(n), far below the decoder's nesting limit.
        let many: Vec<Value> = (0..4096)
            .map(|i| t(&format!("{{ok, #{{a => {i}, b => {i}}}}}")))
            .collect();
        fn depth(v: &Value) -> usize {
            v.as_tuple()
                .map_or(0, |items| 1 + items.iter().map(depth).max().unwrap_or(0))
        }
        let filter = keys_filter(&many, &both).unwrap();
        assert!(depth(&filter) <= 16, "depth {}", depth(&filter));
        assert_eq!(keys_filter(&[], &id), None);
        assert_eq!(keys_filter(&[t("{error, x}")], &id), None);
    }
}
