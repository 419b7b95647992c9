//! The registry: resources, and each resource's records by primary key.
//!
//! A [`Resource`] holds its configuration (primary key, lifetimes, identities, restart
//! intensity) and its index: primary [`Key`] → the record's actor and its last committed record,
//! split into shards so that a commit only contends with its own shard, plus one index per
//! identity. Keeping the committed record in the index lets a query scan a shard as a flat table
//! under one read lock, without visiting each actor. Everything that changes which key maps to
//! which actor — create, re-key, destroy, identity changes — happens under write locks taken in
//! one order (identities, then shards by number), so uniqueness holds.

use super::error::StoreError;
use super::supervisor::RestartPolicy;
use crate::query::filter::Expr;
use crate::query::typed::{FieldType, Types};
use crate::storage::{Journal, JournalError};
use crate::term::{Atom, Record, Value};
use arc_swap::{ArcSwap, Guard};
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a batch was refused whole: the position (from 0) of its first failing record, and why.
pub type BatchError = (usize, StoreError);

/// Index shards per resource.
const SHARDS: usize = 16;

/// A primary-key (or identity) value: one value per key field, in key-field order.
///
/// Its hash is computed once, when the key is made: the index shards, hash-table lookups and
/// the rehashing of a growing table all reuse it.
#[derive(Debug, Clone)]
pub struct Key {
    hash: u64,
    values: KeyValues,
}

/// A key's values. Most keys have one field: its value is kept in the key itself, so comparing
/// keys in a hash-table lookup reads no other memory (and a key costs no allocation).
#[derive(Debug, Clone)]
enum KeyValues {
    One(Value),
    Many(Box<[Value]>),
}

impl Key {
    /// A key of these values.
    pub fn new(mut values: Vec<Value>) -> Key {
        let values = match values.pop() {
            Some(one) if values.is_empty() => KeyValues::One(one),
            Some(last) => {
                values.push(last);
                KeyValues::Many(values.into_boxed_slice())
            }
            None => KeyValues::Many(Box::new([])),
        };
        Key::of(values)
    }

    fn of(values: KeyValues) -> Key {
        let mut key = Key { hash: 0, values };
        let mut hasher = rustc_hash::FxHasher::default();
        key.values().hash(&mut hasher);
        key.hash = hasher.finish();
        key
    }

    /// The values, in key-field order.
    pub fn values(&self) -> &[Value] {
        match &self.values {
            KeyValues::One(value) => std::slice::from_ref(value),
            KeyValues::Many(values) => values,
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.hash == other.hash && self.values() == other.values()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A unique identity besides the primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Its name (as given in `define`).
    pub name: Value,
    /// Its fields.
    pub fields: Vec<Atom>,
    /// Only records matching this filter take part (`where`).
    pub filter: Option<Expr>,
    /// The `where` filter as it was given (kept to describe the identity again).
    pub filter_term: Option<Value>,
    /// Whether records with a `nil` in one of the fields never conflict (the default).
    pub nils_distinct: bool,
}

impl Identity {
    /// An identity over `fields`, every record taking part, nils distinct.
    pub fn new(name: Value, fields: Vec<Atom>) -> Identity {
        Identity {
            name,
            fields,
            filter: None,
            filter_term: None,
            nils_distinct: true,
        }
    }
}

/// A resource's settings, from `define`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceConfig {
    /// Primary-key fields, in order.
    pub primary_key: Vec<Atom>,
    /// Milliseconds without a touch before a record expires.
    pub inactivity_timeout: Option<u64>,
    /// Milliseconds after creation before a record expires.
    pub maximum_lifetime: Option<u64>,
    /// Unique identities.
    pub identities: Vec<Identity>,
    /// Restart intensity of each record's supervisor.
    pub restart: RestartPolicy,
    /// How long an expiry handler has to destroy an expired record.
    pub expiry_grace: u64,
    /// Fields compared by type (dates, decimals, case-insensitive strings...).
    pub types: Arc<Types>,
}

impl ResourceConfig {
    /// The options of `define` that give this configuration.
    pub fn to_opts(&self) -> Value {
        let atom = |s: &'static str| Value::Atom(Atom::from_static(s));
        let atoms = |fields: &[Atom]| Value::list(fields.iter().map(|f| Value::Atom(*f)).collect());
        let ms = |v: Option<u64>| v.map_or(atom("infinity"), |n| Value::Int(n as i64));
        let identities = self
            .identities
            .iter()
            .map(|id| {
                let opts = Value::map(vec![
                    (
                        atom("where"),
                        id.filter_term.clone().unwrap_or_else(Value::nil),
                    ),
                    (atom("nils_distinct"), Value::boolean(id.nils_distinct)),
                ]);
                Value::tuple(vec![id.name.clone(), atoms(&id.fields), opts])
            })
            .collect();
        let types = self
            .types
            .iter()
            .map(|(f, t)| (Value::Atom(f), Value::Atom(Atom::from_static(t.name()))))
            .collect();
        Value::map(vec![
            (atom("primary_key"), atoms(&self.primary_key)),
            (atom("inactivity_timeout"), ms(self.inactivity_timeout)),
            (atom("maximum_lifetime"), ms(self.maximum_lifetime)),
            (atom("identities"), Value::list(identities)),
            (atom("types"), Value::map(types)),
            (
                atom("max_restarts"),
                Value::Int(self.restart.max_restarts as i64),
            ),
            (
                atom("max_seconds"),
                Value::Int(self.restart.max_seconds as i64),
            ),
            (atom("expiry_grace"), Value::Int(self.expiry_grace as i64)),
        ])
    }

    /// A configuration with defaults for everything but the primary key.
    pub fn new(primary_key: Vec<Atom>) -> ResourceConfig {
        ResourceConfig {
            primary_key,
            inactivity_timeout: None,
            maximum_lifetime: None,
            identities: Vec::new(),
            restart: RestartPolicy::default(),
            expiry_grace: 5_000,
            types: Arc::new(Types::default()),
        }
    }

    /// Whether records of this resource ever expire.
    pub fn has_lifetimes(&self) -> bool {
        self.inactivity_timeout.is_some() || self.maximum_lifetime.is_some()
    }
}

/// Where a resource journals its changes, once the node has a data directory.
pub type JournalSlot = std::sync::OnceLock<Arc<Journal>>;

/// What the registry keeps beside each record's committed state: its actor. The registry starts
/// one for every record it admits and hands it out to whoever looks the record up.
pub trait Occupant: Send + Sync + Sized + 'static {
    /// The actor of a record just admitted to `resource`: `record`, created at `born` (node
    /// milliseconds; `born_wall` in Unix milliseconds), its inactivity counting from `now`.
    fn start(
        resource: Arc<Resource<Self>>,
        record: Record,
        now: u64,
        born: u64,
        born_wall: i64,
    ) -> Arc<Self>;
    /// When its record was created, in Unix milliseconds (what the journal keeps).
    fn born_wall(&self) -> i64;
}

/// The tenants' namespaces of resources, by resource and tenant.
type Tenants<A> = HashMap<(Atom, Value), Arc<Resource<A>>>;

/// All resources, and their tenants' namespaces; each record held by an actor `A`.
pub struct Store<A> {
    resources: RwLock<FxHashMap<Atom, Arc<Resource<A>>>>,
    tenants: RwLock<Tenants<A>>,
    journal: Arc<JournalSlot>,
}

impl<A> Default for Store<A> {
    fn default() -> Self {
        Store {
            resources: RwLock::default(),
            tenants: RwLock::default(),
            journal: Arc::default(),
        }
    }
}

impl<A: Occupant> Store<A> {
    /// Defines a resource, or updates the options of an existing one.
    pub fn define(&self, name: Atom, config: ResourceConfig) -> Result<(), StoreError> {
        if config.primary_key.is_empty() {
            return Err(StoreError::BadRequest(
                "primary_key must name at least one field".into(),
            ));
        }
        let mut resources = self.resources.write();
        match resources.get(&name) {
            Some(existing) => {
                existing.reconfigure(config.clone())?;
                existing.log(|| existing.define_entry());
                // Every tenant follows the resource's definition.
                for ((resource, _), tenant) in self.tenants.read().iter() {
                    if *resource == name {
                        tenant.reconfigure(config.clone())?;
                    }
                }
                Ok(())
            }
            None => {
                let resource = Resource::new(name, None, config, self.journal.clone());
                resource.log(|| resource.define_entry());
                resources.insert(name, Arc::new(resource));
                Ok(())
            }
        }
    }

    /// The namespace of `tenant` in the resource `name` (made on first use, with the
    /// resource's definition); the resource itself when `tenant` is `None`.
    pub fn get_in(
        &self,
        name: Atom,
        tenant: Option<&Value>,
    ) -> Result<Arc<Resource<A>>, StoreError> {
        let Some(tenant) = tenant else {
            return self.get(name);
        };
        let key = (name, tenant.clone());
        if let Some(r) = self.tenants.read().get(&key) {
            return Ok(r.clone());
        }
        let base = self.get(name)?;
        let mut tenants = self.tenants.write();
        let r = tenants
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Resource::new(
                    name,
                    Some(tenant.clone()),
                    (**base.config()).clone(),
                    self.journal.clone(),
                ))
            })
            .clone();
        Ok(r)
    }

    /// The journal changes are written to, if the node keeps one.
    pub fn journal(&self) -> Option<Arc<Journal>> {
        self.journal.get().cloned()
    }

    /// From now on every change is journaled in `journal` (once; later calls are ignored).
    pub fn attach_journal(&self, journal: Arc<Journal>) {
        let _ = self.journal.set(journal);
    }

    /// Every resource and tenant namespace.
    pub fn all(&self) -> Vec<Arc<Resource<A>>> {
        let mut all: Vec<Arc<Resource<A>>> = self.resources.read().values().cloned().collect();
        all.extend(self.tenants.read().values().cloned());
        all
    }

    /// Every tenant namespace of the resource `name`.
    pub fn tenants_of(&self, name: Atom) -> Vec<Arc<Resource<A>>> {
        self.tenants
            .read()
            .iter()
            .filter(|((resource, _), _)| *resource == name)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// A defined resource.
    pub fn get(&self, name: Atom) -> Result<Arc<Resource<A>>, StoreError> {
        self.resources
            .read()
            .get(&name)
            .cloned()
            .ok_or(StoreError::UnknownResource(name))
    }

    /// Names of every defined resource.
    pub fn names(&self) -> Vec<Atom> {
        let mut names: Vec<Atom> = self.resources.read().keys().copied().collect();
        names.sort();
        names
    }

    /// Total records over all resources and tenants.
    pub fn total_records(&self) -> usize {
        let tenants: usize = self.tenants.read().values().map(|r| r.len()).sum();
        tenants
            + self
                .resources
                .read()
                .values()
                .map(|r| r.len())
                .sum::<usize>()
    }
}

/// One indexed record: its actor and its last committed state.
struct Entry<A> {
    actor: Arc<A>,
    record: Record,
}

type Shard<A> = FxHashMap<Key, Entry<A>>;

/// One resource and its records, each held by an actor `A`.
pub struct Resource<A> {
    /// The resource's name.
    pub name: Atom,
    /// The tenant whose namespace this is, if any.
    pub tenant: Option<Value>,
    /// Read on every request, replaced only by a `define`: an `ArcSwap`, whose loads write
    /// nothing shared (a lock or a reference count would be a cache line every core's
    /// requests bounce between).
    config: ArcSwap<ResourceConfig>,
    shards: Box<[RwLock<Shard<A>>]>,
    identities: RwLock<Vec<FxHashMap<Key, Key>>>,
    len: AtomicUsize,
    journal: Arc<JournalSlot>,
}

impl<A: Occupant> Resource<A> {
    fn new(
        name: Atom,
        tenant: Option<Value>,
        config: ResourceConfig,
        journal: Arc<JournalSlot>,
    ) -> Resource<A> {
        let identities = vec![FxHashMap::default(); config.identities.len()];
        Resource {
            name,
            tenant,
            journal,
            config: ArcSwap::from_pointee(config),
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            identities: RwLock::new(identities),
            len: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: &Key) -> usize {
        // Middle bits: a shard's hash table takes its bucket from the low bits and its
        // control byte from the top ones.
        (key.hash >> 32) as usize % SHARDS
    }

    /// The current configuration.
    pub fn config(&self) -> Guard<Arc<ResourceConfig>> {
        self.config.load()
    }

    fn reconfigure(&self, config: ResourceConfig) -> Result<(), StoreError> {
        let mut identities = self.identities.write();
        let old = self.config();
        if old.primary_key != config.primary_key && !self.is_empty() {
            return Err(StoreError::PrimaryKeyMismatch(old.primary_key.clone()));
        }
        if old.identities != config.identities {
            // Rebuild the identity indexes from the committed records.
            let mut rebuilt = vec![FxHashMap::default(); config.identities.len()];
            for shard in self.shards.iter() {
                for (key, entry) in shard.read().iter() {
                    for (i, identity) in config.identities.iter().enumerate() {
                        if let Some(values) = identity_key(identity, &config.types, &entry.record) {
                            rebuilt[i].entry(values).or_insert_with(|| key.clone());
                        }
                    }
                }
            }
            *identities = rebuilt;
        }
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// Number of live records.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the resource holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The primary key of a record.
    pub fn key_of(&self, record: &Record) -> Result<Key, StoreError> {
        let config = self.config();
        key_from(&config.primary_key, |f| record.get(f))
    }

    /// The key named by a primary-key map.
    pub fn key_from_pk(&self, pk: &Value) -> Result<Key, StoreError> {
        if pk.as_map().is_none() {
            return Err(StoreError::BadRequest(format!(
                "a primary key must be a map of its fields, got: {pk:?}"
            )));
        }
        let config = self.config();
        key_from(&config.primary_key, |f| pk.map_get_atom(f))
    }

    /// The primary-key map of a key.
    pub fn pk_value(&self, key: &Key) -> Value {
        let config = self.config();
        Value::map(
            config
                .primary_key
                .iter()
                .zip(key.values().iter())
                .map(|(f, v)| (Value::Atom(*f), v.clone()))
                .collect(),
        )
    }

    /// The actor of the record with `key`.
    pub fn lookup(&self, key: &Key) -> Option<Arc<A>> {
        self.shards[self.shard(key)]
            .read()
            .get(key)
            .map(|e| e.actor.clone())
    }

    /// The actor of the record whose `fields` equal those of `record`, for upserts: `fields`
    /// must be the primary key or an identity. `Ok(None)` when no record has those values.
    pub fn find_by(&self, fields: &[Atom], record: &Record) -> Result<Option<Arc<A>>, StoreError> {
        let config = self.config();
        let same = |a: &[Atom]| a.len() == fields.len() && a.iter().all(|f| fields.contains(f));
        if same(&config.primary_key) {
            let key = self.key_of(record)?;
            return Ok(self.lookup(&key));
        }
        let Some(i) = config.identities.iter().position(|id| same(&id.fields)) else {
            return Err(StoreError::UnknownUpsertKeys(fields.to_vec()));
        };
        let Some(values) = identity_key(&config.identities[i], &config.types, record) else {
            return Ok(None);
        };
        let key = self
            .identities
            .read()
            .get(i)
            .and_then(|ix| ix.get(&values).cloned());
        Ok(key.and_then(|k| self.lookup(&k)))
    }

    /// `Resource` or `{Resource, Tenant}`, as requests name this namespace.
    pub fn ref_term(&self) -> Value {
        match &self.tenant {
            None => Value::Atom(self.name),
            Some(t) => Value::pair(Value::Atom(self.name), t.clone()),
        }
    }

    /// Appends the entry `make` builds to the journal, if the node keeps one. Called under the
    /// locks of the change it records, so the journal has changes in the order they were made.
    fn log(&self, make: impl FnOnce() -> Value) {
        if let Some(journal) = self.journal.get()
            && let Err(e) = journal.append(&make())
        {
            tracing::error!(resource = %self.name, error = %e, "could not journal a change");
        }
    }

    /// Journals records created together as one `put_all` entry (a restart finds all or none
    /// of them); a batch too large for one entry goes in halves, each written in turn, so a
    /// crash between two writes is the one case where a restart finds part of a batch.
    fn log_batch(&self, records: &[Record], born_wall: i64) {
        if let Some(journal) = self.journal.get() {
            let entry = |chunk: &[Record]| self.put_all_entry(chunk, born_wall);
            if let Err(e) = append_halving(records, &entry, &|term| journal.append(term)) {
                tracing::error!(resource = %self.name, error = %e, "could not journal a change");
            }
        }
    }

    fn log_rekey(&self, old: &Key, new: &Key, record: &Record, born_wall: i64) {
        if old != new {
            self.log(|| self.delete_entry(old));
        }
        self.log(|| self.put_entry(record, born_wall));
    }

    /// `{define, Resource, Opts}` of the base resource (tenants follow it).
    pub fn define_entry(&self) -> Value {
        let atom = |s: &'static str| Value::Atom(Atom::from_static(s));
        Value::tuple(vec![
            atom("define"),
            Value::Atom(self.name),
            self.config().to_opts(),
        ])
    }

    /// `{put, Ref, Record, BornWallMs}`.
    pub fn put_entry(&self, record: &Record, born_wall: i64) -> Value {
        Value::tuple(vec![
            Value::Atom(Atom::from_static("put")),
            self.ref_term(),
            record.to_value(),
            Value::Int(born_wall),
        ])
    }

    /// `{put_all, Ref, [Record], BornWallMs}`: records created together (all or nothing).
    pub fn put_all_entry(&self, records: &[Record], born_wall: i64) -> Value {
        Value::tuple(vec![
            Value::Atom(Atom::from_static("put_all")),
            self.ref_term(),
            Value::list(records.iter().map(Record::to_value).collect()),
            Value::Int(born_wall),
        ])
    }

    fn delete_entry(&self, key: &Key) -> Value {
        Value::tuple(vec![
            Value::Atom(Atom::from_static("delete")),
            self.ref_term(),
            self.pk_value(key),
        ])
    }

    /// Every record's actor.
    pub fn actors(&self) -> Vec<Arc<A>> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            out.extend(shard.read().values().map(|e| e.actor.clone()));
        }
        out
    }

    /// Every live record with its creation time (Unix ms), for a journal snapshot.
    pub fn records_with_birth(&self) -> Vec<(Record, i64)> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            for entry in shard.read().values() {
                out.push((entry.record.clone(), entry.actor.born_wall()));
            }
        }
        out
    }

    /// Whether `record` still has `incoming`'s values for the upsert keys `fields` (the
    /// primary key or an identity's fields, compared as the identity compares them).
    pub fn still_has_keys(&self, record: &Record, fields: &[Atom], incoming: &Record) -> bool {
        let config = self.config();
        let same = |a: &[Atom]| a.len() == fields.len() && a.iter().all(|f| fields.contains(f));
        if same(&config.primary_key) {
            return matches!((self.key_of(record), self.key_of(incoming)), (Ok(a), Ok(b)) if a == b);
        }
        match config.identities.iter().find(|id| same(&id.fields)) {
            Some(identity) => {
                let key = |r| identity_key(identity, &config.types, r);
                matches!((key(record), key(incoming)), (Some(a), Some(b)) if a == b)
            }
            None => false,
        }
    }

    /// Adds a new record and its actor, born at `now` (node milliseconds).
    pub fn insert(
        self: &Arc<Self>,
        record: Record,
        now: u64,
    ) -> Result<(Arc<A>, Record), StoreError> {
        self.insert_born(record, now, now, wall_ms())
    }

    /// Adds a record created at `born` (node milliseconds; `born_wall` in Unix milliseconds),
    /// its inactivity counting from `now`: a new record, or one restored from the journal.
    pub fn insert_born(
        self: &Arc<Self>,
        record: Record,
        now: u64,
        born: u64,
        born_wall: i64,
    ) -> Result<(Arc<A>, Record), StoreError> {
        let config = self.config();
        let key = key_from(&config.primary_key, |f| record.get(f))?;
        let claims = identity_claims(&config, &record);
        let mut identities = self.identities.write();
        let mut shard = self.shards[self.shard(&key)].write();
        let slot = match shard.entry(key) {
            std::collections::hash_map::Entry::Occupied(taken) => {
                let pk = self.pk_value(taken.key());
                return Err(StoreError::AlreadyExists(pk));
            }
            std::collections::hash_map::Entry::Vacant(slot) => slot,
        };
        check_identities(&config, &identities, &claims, None)?;
        let actor = A::start(self.clone(), record.clone(), now, born, born_wall);
        self.log(|| self.put_entry(&record, born_wall));
        for (i, values) in claims {
            identities[i].insert(values, slot.key().clone());
        }
        slot.insert(Entry {
            actor: actor.clone(),
            record: record.clone(),
        });
        self.len.fetch_add(1, Ordering::Relaxed);
        Ok((actor, record))
    }

    /// Adds every record of `records` and its actor, created at `born` (node milliseconds;
    /// `born_wall` in Unix milliseconds) with their inactivity counting from `now`, or none of
    /// them (a bulk create that is all or nothing). The first record, by position, whose primary key is
    /// missing or in use (by a stored record or an earlier record of the batch), or whose
    /// identity values are taken (likewise), is returned with its position, and nothing is
    /// added. The checks and the inserts happen under the identities' write lock and the write
    /// locks of every shard the batch touches, taken in the registry's one order, so no other
    /// create can take a key in between and no record of a refused batch is ever visible. The
    /// batch is one journal entry, so a restart finds all of it or none.
    pub fn insert_all(
        self: &Arc<Self>,
        records: Vec<Record>,
        now: u64,
        born: u64,
        born_wall: i64,
    ) -> Result<Vec<(Arc<A>, Record)>, BatchError> {
        let config = self.config();
        let keys: Vec<Result<Key, StoreError>> = records
            .iter()
            .map(|r| key_from(&config.primary_key, |f| r.get(f)))
            .collect();
        let mut touched: Vec<usize> = keys.iter().flatten().map(|k| self.shard(k)).collect();
        touched.sort_unstable();
        touched.dedup();
        let mut identities = self.identities.write();
        let mut shards: Vec<_> = touched.iter().map(|&s| self.shards[s].write()).collect();
        let slot = |key: &Key| {
            touched
                .binary_search(&self.shard(key))
                .expect("every key's shard is locked")
        };
        let mut batch_keys: rustc_hash::FxHashSet<&Key> = Default::default();
        let mut batch_claims: rustc_hash::FxHashSet<(usize, Key)> = Default::default();
        let mut claims_of = Vec::with_capacity(records.len());
        for (i, (record, key)) in records.iter().zip(&keys).enumerate() {
            let key = key.as_ref().map_err(|e| (i, e.clone()))?;
            if shards[slot(key)].contains_key(key) || !batch_keys.insert(key) {
                return Err((i, StoreError::AlreadyExists(self.pk_value(key))));
            }
            let claims = identity_claims(&config, record);
            check_identities(&config, &identities, &claims, None).map_err(|e| (i, e))?;
            for (id, values) in &claims {
                if !batch_claims.insert((*id, values.clone())) {
                    return Err((i, identity_conflict(&config, *id, values)));
                }
            }
            claims_of.push(claims);
        }
        self.log_batch(&records, born_wall);
        let mut created = Vec::with_capacity(records.len());
        for ((record, key), claims) in records.into_iter().zip(keys).zip(claims_of) {
            let key = key.expect("checked above");
            let actor = A::start(self.clone(), record.clone(), now, born, born_wall);
            for (id, values) in claims {
                identities[id].insert(values, key.clone());
            }
            let entry = Entry {
                actor: actor.clone(),
                record: record.clone(),
            };
            shards[slot(&key)].insert(key, entry);
            created.push((actor, record));
        }
        self.len.fetch_add(created.len(), Ordering::Relaxed);
        Ok(created)
    }

    /// Commits `new` as `actor`'s record (it was `old`): moves it to its new key if the key
    /// changed and updates the identities, refusing a key or identity value in use.
    pub fn commit(&self, actor: &Arc<A>, old: &Record, new: &Record) -> Result<(), StoreError> {
        let config = self.config();
        let old_key = key_from(&config.primary_key, |f| old.get(f))?;
        let new_key = key_from(&config.primary_key, |f| new.get(f))?;
        let old_claims = identity_claims(&config, old);
        let new_claims = identity_claims(&config, new);
        let owned = |shard: &Shard<A>, key: &Key| {
            shard.get(key).is_some_and(|e| Arc::ptr_eq(&e.actor, actor))
        };
        if old_key == new_key && old_claims == new_claims {
            let mut shard = self.shards[self.shard(&old_key)].write();
            return match shard.get_mut(&old_key) {
                Some(entry) if Arc::ptr_eq(&entry.actor, actor) => {
                    self.log(|| self.put_entry(new, actor.born_wall()));
                    entry.record = new.clone();
                    Ok(())
                }
                _ => Err(StoreError::NotFound),
            };
        }
        let mut identities = self.identities.write();
        check_identities(&config, &identities, &new_claims, Some(&old_key))?;
        let (a, b) = (self.shard(&old_key), self.shard(&new_key));
        if a == b {
            let mut shard = self.shards[a].write();
            if !owned(&shard, &old_key) {
                return Err(StoreError::NotFound);
            }
            if old_key != new_key && shard.contains_key(&new_key) {
                return Err(StoreError::AlreadyExists(self.pk_value(&new_key)));
            }
            self.log_rekey(&old_key, &new_key, new, actor.born_wall());
            if let Some(mut entry) = shard.remove(&old_key) {
                entry.record = new.clone();
                shard.insert(new_key.clone(), entry);
            }
        } else {
            // Two shards, locked in shard order.
            let (mut lo, mut hi) = (self.shards[a.min(b)].write(), self.shards[a.max(b)].write());
            let (old_shard, new_shard) = if a < b {
                (&mut *lo, &mut *hi)
            } else {
                (&mut *hi, &mut *lo)
            };
            if !owned(old_shard, &old_key) {
                return Err(StoreError::NotFound);
            }
            if new_shard.contains_key(&new_key) {
                return Err(StoreError::AlreadyExists(self.pk_value(&new_key)));
            }
            self.log_rekey(&old_key, &new_key, new, actor.born_wall());
            if let Some(mut entry) = old_shard.remove(&old_key) {
                entry.record = new.clone();
                new_shard.insert(new_key.clone(), entry);
            }
        }
        move_claims(&mut identities, &old_key, &old_claims, &new_key, new_claims);
        Ok(())
    }

    /// Removes `actor`, whose committed record is `record`, if it is still the one indexed.
    pub fn remove(&self, actor: &Arc<A>, record: &Record) -> bool {
        let config = self.config();
        let Ok(key) = key_from(&config.primary_key, |f| record.get(f)) else {
            return false;
        };
        let mut identities = self.identities.write();
        let mut shard = self.shards[self.shard(&key)].write();
        match shard.get(&key) {
            Some(entry) if Arc::ptr_eq(&entry.actor, actor) => {}
            _ => return false,
        }
        self.log(|| self.delete_entry(&key));
        shard.remove(&key);
        self.len.fetch_sub(1, Ordering::Relaxed);
        for (i, values) in identity_claims(&config, record) {
            if identities[i].get(&values) == Some(&key) {
                identities[i].remove(&values);
            }
        }
        true
    }

    /// Removes every record; returns the actors removed (for their exit notifications).
    pub fn take_all(&self) -> Vec<Arc<A>> {
        let mut identities = self.identities.write();
        self.log(|| Value::pair(Value::Atom(Atom::from_static("clear")), self.ref_term()));
        for identity in identities.iter_mut() {
            identity.clear();
        }
        let mut actors = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            self.len.fetch_sub(shard.len(), Ordering::Relaxed);
            actors.extend(shard.drain().map(|(_, entry)| entry.actor));
        }
        actors
    }

    /// The committed state of every live record that `filter` matches (every record without a
    /// filter). A large resource is scanned by several threads, each over its own shards.
    pub fn select(&self, filter: Option<&Expr>) -> Vec<Record> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4);
        if threads < 2 || self.len() < PARALLEL_SCAN_MIN {
            let mut out = Vec::new();
            self.scan(filter, |_, record| out.push(record.clone()));
            return out;
        }
        let per_thread = SHARDS.div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .shards
                .chunks(per_thread)
                .skip(1)
                .map(|shards| {
                    scope.spawn(move || {
                        let mut out = Vec::new();
                        scan_shards(shards, filter, |_, record| out.push(record.clone()));
                        out
                    })
                })
                .collect();
            let mut out = Vec::new();
            scan_shards(
                &self.shards[..per_thread.min(SHARDS)],
                filter,
                |_, record| out.push(record.clone()),
            );
            for worker in workers {
                // A worker only panics if a filter does, which would have panicked here too.
                out.extend(worker.join().unwrap_or_default());
            }
            out
        })
    }

    /// Calls `hit` with the actor and committed state of every live record that `filter`
    /// matches (every record without a filter), a shard at a time under its read lock.
    pub fn scan(&self, filter: Option<&Expr>, hit: impl FnMut(&Arc<A>, &Record)) {
        scan_shards(&self.shards, filter, hit)
    }
}

/// Resources at least this big are scanned by several threads.
const PARALLEL_SCAN_MIN: usize = 20_000;

/// Scans `shards`; records are checked in batches: first one read of each record of the batch
/// (cheap loads the CPU can overlap), then the filter on records already in cache.
fn scan_shards<A>(
    shards: &[RwLock<Shard<A>>],
    filter: Option<&Expr>,
    mut hit: impl FnMut(&Arc<A>, &Record),
) {
    const BATCH: usize = 64;
    let hint = filter.map(Expr::fields).unwrap_or_default();
    for shard in shards {
        let shard = shard.read();
        let mut batch: Vec<&Entry<A>> = Vec::with_capacity(BATCH);
        let mut entries = shard.values();
        loop {
            batch.clear();
            batch.extend(entries.by_ref().take(BATCH));
            if batch.is_empty() {
                break;
            }
            let warmed = batch
                .iter()
                .fold(0u64, |acc, e| acc.wrapping_add(e.record.warm(&hint)));
            std::hint::black_box(warmed);
            for entry in &batch {
                if filter.is_none_or(|f| f.matches(&entry.record)) {
                    hit(&entry.actor, &entry.record);
                }
            }
        }
    }
}

fn move_claims(
    identities: &mut [FxHashMap<Key, Key>],
    old_key: &Key,
    old_claims: &[(usize, Key)],
    new_key: &Key,
    new_claims: Vec<(usize, Key)>,
) {
    for (i, values) in old_claims {
        if identities[*i].get(values) == Some(old_key) {
            identities[*i].remove(values);
        }
    }
    for (i, values) in new_claims {
        identities[i].insert(values, new_key.clone());
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn key_from<'a>(
    fields: &[Atom],
    get: impl Fn(Atom) -> Option<&'a Value>,
) -> Result<Key, StoreError> {
    if let [field] = fields {
        return match get(*field) {
            Some(v) if !v.is_nil() => Ok(Key::of(KeyValues::One(v.clone()))),
            _ => Err(StoreError::MissingPrimaryKey(vec![*field])),
        };
    }
    let mut values = Vec::with_capacity(fields.len());
    let mut missing = Vec::new();
    for f in fields {
        match get(*f) {
            Some(v) if !v.is_nil() => values.push(v.clone()),
            _ => missing.push(*f),
        }
    }
    if missing.is_empty() {
        Ok(Key::new(values))
    } else {
        Err(StoreError::MissingPrimaryKey(missing))
    }
}

/// The identity key of `record`, or `None` when the record takes no part in the identity: it
/// does not match the identity's `where`, or a field is nil or absent and nils are distinct.
/// `ci_string` fields are keyed by their lowercase form.
fn identity_key(identity: &Identity, types: &Types, record: &Record) -> Option<Key> {
    if identity.filter.as_ref().is_some_and(|f| !f.matches(record)) {
        return None;
    }
    let nil = Value::nil();
    let mut values = Vec::with_capacity(identity.fields.len());
    for f in &identity.fields {
        let v = record.get(*f).unwrap_or(&nil);
        if v.is_nil() && identity.nils_distinct {
            return None;
        }
        match (types.get(*f), v.as_bytes()) {
            (Some(FieldType::CiString), Some(bytes)) => {
                values.push(match std::str::from_utf8(bytes) {
                    Ok(text) => Value::from(text.to_lowercase().as_str()),
                    Err(_) => v.clone(),
                })
            }
            _ => values.push(v.clone()),
        }
    }
    Some(Key::new(values))
}

fn identity_claims(config: &ResourceConfig, record: &Record) -> Vec<(usize, Key)> {
    config
        .identities
        .iter()
        .enumerate()
        .filter_map(|(i, id)| identity_key(id, &config.types, record).map(|k| (i, k)))
        .collect()
}

fn check_identities(
    config: &ResourceConfig,
    identities: &[FxHashMap<Key, Key>],
    claims: &[(usize, Key)],
    owner: Option<&Key>,
) -> Result<(), StoreError> {
    for (i, values) in claims {
        if let Some(holder) = identities[*i].get(values)
            && Some(holder) != owner
        {
            return Err(identity_conflict(config, *i, values));
        }
    }
    Ok(())
}

/// Appends `entry(records)`, or, when `append` finds it too large, the entries of its halves
/// (recursively; a single record too large is the error).
fn append_halving(
    records: &[Record],
    entry: &dyn Fn(&[Record]) -> Value,
    append: &dyn Fn(&Value) -> Result<(), JournalError>,
) -> Result<(), JournalError> {
    match append(&entry(records)) {
        Err(JournalError::TooLarge(_)) if records.len() > 1 => {
            let (first, rest) = records.split_at(records.len() / 2);
            append_halving(first, entry, append)?;
            append_halving(rest, entry, append)
        }
        other => other,
    }
}

/// The error for identity `i` of `config` already holding `values`.
fn identity_conflict(config: &ResourceConfig, i: usize, values: &Key) -> StoreError {
    let identity = &config.identities[i];
    let fields = Value::map(
        identity
            .fields
            .iter()
            .zip(values.values().iter())
            .map(|(f, v)| (Value::Atom(*f), v.clone()))
            .collect(),
    );
    StoreError::IdentityConflict(identity.name.clone(), fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Resource, Store};
    use crate::term::parse_term;

    fn atom(s: &str) -> Atom {
        Atom::new(s).unwrap()
    }

    fn rec(text: &str) -> Record {
        Record::from_map(&parse_term(text).unwrap()).unwrap()
    }

    fn resource(identities: Vec<Identity>) -> Arc<Resource> {
        let store = Store::default();
        let mut config = ResourceConfig::new(vec![atom("id")]);
        config.identities = identities;
        store.define(atom("users"), config).unwrap();
        store.get(atom("users")).unwrap()
    }

    fn email_identity() -> Identity {
        Identity::new(Value::Atom(atom("unique_email")), vec![atom("email")])
    }

    #[test]
    fn keys_of_one_or_several_fields_find_their_records() {
        // A one-field key keeps its value inline: the same key however it is made.
        let id = atom("id");
        let pk = parse_term("#{id => 7}").unwrap();
        let from_pk = key_from(&[id], |f| pk.map_get_atom(f)).unwrap();
        let made = Key::new(vec![Value::Int(7)]);
        assert_eq!(from_pk, made);
        assert_eq!(from_pk.hash, made.hash);
        assert_eq!(from_pk.values(), &[Value::Int(7)]);
        assert_ne!(from_pk, Key::new(vec![Value::Int(8)]));
        assert!(std::mem::size_of::<Key>() <= 32, "a key grew");
        // Several fields, and a missing one.
        let (a, b) = (atom("a"), atom("b"));
        let pk = parse_term("#{a => 1, b => <<\"x\">>}").unwrap();
        let two = key_from(&[a, b], |f| pk.map_get_atom(f)).unwrap();
        assert_eq!(two, Key::new(vec![Value::Int(1), Value::from("x")]));
        assert_eq!(two.values().len(), 2);
        assert!(matches!(
            key_from(&[id], |f| pk.map_get_atom(f)),
            Err(StoreError::MissingPrimaryKey(m)) if m == vec![id]
        ));
    }

    #[test]
    fn insert_refuses_a_key_in_use_and_a_missing_key() {
        let r = resource(vec![]);
        r.insert(rec("#{id => 1, n => a}"), 0).unwrap();
        assert!(matches!(
            r.insert(rec("#{id => 1, n => b}"), 0),
            Err(StoreError::AlreadyExists(_))
        ));
        assert!(matches!(
            r.insert(rec("#{n => c}"), 0),
            Err(StoreError::MissingPrimaryKey(_))
        ));
        assert!(matches!(
            r.insert(rec("#{id => nil}"), 0),
            Err(StoreError::MissingPrimaryKey(_))
        ));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn insert_all_adds_every_record_or_none() {
        let r = resource(vec![email_identity()]);
        r.insert(rec("#{id => 1, email => <<\"a@x\">>}"), 0)
            .unwrap();
        let ids = |r: &Arc<Resource>| {
            let mut ids = Vec::new();
            r.scan(None, |_, rec| {
                ids.push(rec.get(atom("id")).cloned().unwrap())
            });
            ids.sort_by_key(|v| v.as_int());
            ids
        };
        let refused = |batch: &[&str]| {
            let before = ids(&r);
            let err = r
                .insert_all(batch.iter().map(|t| rec(t)).collect(), 0, 0, 0)
                .map(|_| ())
                .unwrap_err();
            assert_eq!(ids(&r), before, "a refused batch adds nothing");
            err
        };
        // A key in use, by a stored record or an earlier record of the batch.
        assert!(matches!(
            refused(&["#{id => 2}", "#{id => 1}", "#{id => 3}"]),
            (1, StoreError::AlreadyExists(_))
        ));
        assert!(matches!(
            refused(&["#{id => 2}", "#{id => 3}", "#{id => 2}"]),
            (2, StoreError::AlreadyExists(_))
        ));
        // A missing key; the first failing record by position is named.
        assert!(matches!(
            refused(&["#{id => 2}", "#{n => x}", "#{id => 1}"]),
            (1, StoreError::MissingPrimaryKey(_))
        ));
        // An identity taken by a stored record or an earlier record of the batch.
        assert!(matches!(
            refused(&["#{id => 2}", "#{id => 3, email => <<\"a@x\">>}"]),
            (1, StoreError::IdentityConflict(..))
        ));
        assert!(matches!(
            refused(&[
                "#{id => 2, email => <<\"b@x\">>}",
                "#{id => 3, email => <<\"b@x\">>}"
            ]),
            (1, StoreError::IdentityConflict(..))
        ));
        // A valid batch: every record, in order, each with its actor, indexed by key and
        // identity (nils stay distinct).
        let created = r
            .insert_all(
                vec![
                    rec("#{id => 3, email => <<\"b@x\">>}"),
                    rec("#{id => 2, email => nil}"),
                    rec("#{id => 4, email => nil}"),
                ],
                0,
                0,
                0,
            )
            .unwrap();
        let created_ids: Vec<_> = created
            .iter()
            .map(|(_, rec)| rec.get(atom("id")).cloned().unwrap())
            .collect();
        assert_eq!(
            created_ids,
            vec![Value::Int(3), Value::Int(2), Value::Int(4)]
        );
        for (actor, rec) in &created {
            assert!(Arc::ptr_eq(
                &r.lookup(&r.key_of(rec).unwrap()).unwrap(),
                actor
            ));
        }
        assert_eq!(r.len(), 4);
        assert_eq!(ids(&r).len(), 4);
        let probe = rec("#{email => <<\"b@x\">>}");
        assert!(r.find_by(&[atom("email")], &probe).unwrap().is_some());
        assert!(matches!(
            r.insert(rec("#{id => 9, email => <<\"b@x\">>}"), 0),
            Err(StoreError::IdentityConflict(..))
        ));
        assert!(r.insert_all(Vec::new(), 0, 0, 0).unwrap().is_empty());
    }

    #[test]
    fn a_batch_too_large_for_one_journal_entry_goes_in_halves() {
        // An `append` that refuses entries of more than 3 records as too large.
        let written = std::cell::RefCell::new(Vec::new());
        let append = |term: &Value| {
            let n = term.as_list().map_or(0, <[Value]>::len);
            if n > 3 {
                return Err(JournalError::TooLarge(n));
            }
            written.borrow_mut().push(n);
            Ok(())
        };
        let entry = |chunk: &[Record]| Value::list(chunk.iter().map(Record::to_value).collect());
        let records: Vec<Record> = (0..10).map(|i| rec(&format!("#{{id => {i}}}"))).collect();
        append_halving(&records[..3], &entry, &append).unwrap();
        assert_eq!(*written.borrow(), vec![3], "a batch that fits is one entry");
        written.borrow_mut().clear();
        append_halving(&records, &entry, &append).unwrap();
        // 10 -> 5 + 5 -> (2 + 3) + (2 + 3): every record once, in order.
        assert_eq!(*written.borrow(), vec![2, 3, 2, 3]);
        let one_too_large = |_: &Value| Err(JournalError::TooLarge(1));
        assert!(matches!(
            append_halving(&records[..1], &entry, &one_too_large),
            Err(JournalError::TooLarge(1))
        ));
    }

    #[test]
    fn racing_batches_sharing_a_key_leave_exactly_one() {
        // 8 threads, each a batch of its own records and one key every batch has: one batch
        // wins whole, every other is refused whole.
        for _ in 0..20 {
            let r = resource(vec![]);
            let won: Vec<bool> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..8)
                    .map(|t| {
                        let r = r.clone();
                        scope.spawn(move || {
                            let mut batch: Vec<Record> = (0..20)
                                .map(|i| rec(&format!("#{{id => {}}}", 1000 + t * 100 + i)))
                                .collect();
                            batch.insert(10, rec("#{id => 1}"));
                            r.insert_all(batch, 0, 0, 0).is_ok()
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            assert_eq!(won.iter().filter(|w| **w).count(), 1);
            assert_eq!(r.len(), 21);
            let mut seen = 0;
            r.scan(None, |_, _| seen += 1);
            assert_eq!(seen, 21);
        }
    }

    #[test]
    fn commit_rekeys_and_keeps_identities_unique() {
        let r = resource(vec![email_identity()]);
        let (a, ra) = r
            .insert(rec("#{id => 1, email => <<\"a@x\">>}"), 0)
            .unwrap();
        let (_b, _) = r
            .insert(rec("#{id => 2, email => <<\"b@x\">>}"), 0)
            .unwrap();
        // A second record with the same email is refused.
        assert!(matches!(
            r.insert(rec("#{id => 3, email => <<\"a@x\">>}"), 0),
            Err(StoreError::IdentityConflict(..))
        ));
        // Nils are distinct.
        r.insert(rec("#{id => 4, email => nil}"), 0).unwrap();
        r.insert(rec("#{id => 5, email => nil}"), 0).unwrap();
        // Re-key 1 -> 10: the old key is gone, the new one is found, the scan sees it once.
        let moved = rec("#{id => 10, email => <<\"a@x\">>}");
        r.commit(&a, &ra, &moved).unwrap();
        assert!(r.lookup(&r.key_of(&ra).unwrap()).is_none());
        assert!(r.lookup(&r.key_of(&moved).unwrap()).is_some());
        let mut seen = 0;
        r.scan(None, |_, rec| {
            if rec.get(atom("id")) == Some(&Value::Int(10)) {
                seen += 1;
            }
        });
        assert_eq!(seen, 1);
        // Re-keying onto a key in use, or taking another's email, changes nothing.
        let clash = rec("#{id => 2, email => <<\"a@x\">>}");
        assert!(matches!(
            r.commit(&a, &moved, &clash),
            Err(StoreError::AlreadyExists(_))
        ));
        let steal = rec("#{id => 10, email => <<\"b@x\">>}");
        assert!(matches!(
            r.commit(&a, &moved, &steal),
            Err(StoreError::IdentityConflict(..))
        ));
        // Upserts find records by identity.
        let probe = rec("#{email => <<\"a@x\">>}");
        assert!(Arc::ptr_eq(
            &r.find_by(&[atom("email")], &probe).unwrap().unwrap(),
            &a
        ));
        assert!(matches!(
            r.find_by(&[atom("other")], &probe),
            Err(StoreError::UnknownUpsertKeys(_))
        ));
        // Removing frees the key and the email.
        assert!(r.remove(&a, &moved));
        r.insert(rec("#{id => 11, email => <<\"a@x\">>}"), 0)
            .unwrap();
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn redefining_with_another_primary_key_needs_an_empty_resource() {
        let store = Store::default();
        store
            .define(atom("t"), ResourceConfig::new(vec![atom("id")]))
            .unwrap();
        let r = store.get(atom("t")).unwrap();
        r.insert(rec("#{id => 1}"), 0).unwrap();
        assert!(matches!(
            store.define(atom("t"), ResourceConfig::new(vec![atom("other")])),
            Err(StoreError::PrimaryKeyMismatch(_))
        ));
        let mut longer = ResourceConfig::new(vec![atom("id")]);
        longer.inactivity_timeout = Some(5);
        store.define(atom("t"), longer).unwrap();
        assert_eq!(r.config().inactivity_timeout, Some(5));
    }

    #[test]
    fn scan_filters_every_record_once() {
        let r = resource(vec![]);
        for i in 0..1000 {
            r.insert(rec(&format!("#{{id => {i}, age => {}}}", i % 80)), 0)
                .unwrap();
        }
        let filter = Expr::parse(&parse_term("{gt, age, 40}").unwrap()).unwrap();
        let mut ids = Vec::new();
        r.scan(Some(&filter), |_, rec| {
            ids.push(rec.get(atom("id")).cloned())
        });
        let expected = (0..1000).filter(|i| i % 80 > 40).count();
        ids.sort_by(|a, b| crate::term::cmp_term(a.as_ref().unwrap(), b.as_ref().unwrap()));
        ids.dedup();
        assert_eq!(ids.len(), expected);
    }

    /// `cargo test --release --lib registry::tests::bench_scan -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_scan() {
        let r = resource(vec![]);
        for i in 0..100_000i64 {
            let text = format!(
                "#{{id => {i}, name => <<\"user-{i}\">>, age => {}, team => <<\"team-{}\">>}}",
                i % 80,
                i % 100
            );
            r.insert(rec(&text), 0).unwrap();
        }
        let filter =
            Expr::parse(&parse_term("{'and', {gt, age, 40}, {eq, team, <<\"team-7\">>}}").unwrap())
                .unwrap();
        let mut best = u128::MAX;
        for _ in 0..30 {
            let start = std::time::Instant::now();
            let n = r.select(Some(&filter)).len();
            best = best.min(start.elapsed().as_micros());
            assert_eq!(n, 500);
        }
        println!("scan of 100k records: best {best} us");
    }

    /// `cargo test --release --lib registry::tests::bench_insert -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_insert() {
        for n in [10_000i64, 1_000_000] {
            let r = resource(vec![]);
            let records: Vec<Record> = (0..n)
                .map(|i| {
                    Record::from_map(&Value::map(vec![
                        (Value::Atom(atom("id")), Value::Int(i)),
                        (
                            Value::Atom(atom("name")),
                            Value::from(format!("user-{i}").as_str()),
                        ),
                        (Value::Atom(atom("age")), Value::Int(i % 80)),
                        (
                            Value::Atom(atom("team")),
                            Value::from(format!("team-{}", i % 100).as_str()),
                        ),
                        (Value::Atom(atom("score")), Value::Int(i * 7)),
                    ]))
                    .unwrap()
                })
                .collect();
            let start = std::time::Instant::now();
            for record in records {
                r.insert(record, 0).unwrap();
            }
            let ns = start.elapsed().as_nanos() as f64 / n as f64;
            println!("insert {n}: {ns:.0} ns/record");
        }
    }
}
