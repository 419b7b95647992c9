//! The registry: resources, and each resource's records by primary key.
//!
//! A [`Resource`] holds its configuration (primary key, lifetimes, identities, restart
//! intensity) and an index from primary [`Key`] to record actor, plus one index per identity.
//! Everything that changes which key maps to which actor — create, re-key, destroy, identity
//! changes — happens under the index's write lock, so uniqueness holds; reads and scans share the
//! read lock. Lock order: a resource's index before any actor's state, never the reverse.

use super::actor::RecordActor;
use super::supervisor::RestartPolicy;
use crate::node::Node;
use crate::term::{Atom, Record, Value};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

/// A primary-key (or identity) value: one value per key field, in key-field order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(pub Box<[Value]>);

/// A unique identity besides the primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Its name (as given in `define`).
    pub name: Value,
    /// Its fields.
    pub fields: Vec<Atom>,
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
}

impl ResourceConfig {
    /// A configuration with defaults for everything but the primary key.
    pub fn new(primary_key: Vec<Atom>) -> ResourceConfig {
        ResourceConfig {
            primary_key,
            inactivity_timeout: None,
            maximum_lifetime: None,
            identities: Vec::new(),
            restart: RestartPolicy::default(),
            expiry_grace: 5_000,
        }
    }

    /// Whether records of this resource ever expire.
    pub fn has_lifetimes(&self) -> bool {
        self.inactivity_timeout.is_some() || self.maximum_lifetime.is_some()
    }
}

/// Why a registry operation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreError {
    /// No record with that key.
    NotFound,
    /// A condition did not hold.
    Stale,
    /// The key is taken (the primary-key map is attached).
    AlreadyExists(Value),
    /// An identity would be duplicated: its name and the clashing values.
    IdentityConflict(Value, Value),
    /// The resource was never defined.
    UnknownResource(Atom),
    /// Key fields are missing or nil.
    MissingPrimaryKey(Vec<Atom>),
    /// Redefinition with another primary key while records exist.
    PrimaryKeyMismatch(Vec<Atom>),
    /// Upsert keys are neither the primary key nor an identity.
    UnknownUpsertKeys(Vec<Atom>),
    /// The request is malformed.
    BadRequest(String),
    /// The record's actor failed while handling the request.
    RecordCrashed(Value),
    /// An aggregate met a non-number where it needs one.
    NotANumber(Atom, Value),
}

/// All resources.
#[derive(Default)]
pub struct Store {
    resources: RwLock<HashMap<Atom, Arc<Resource>>>,
}

impl Store {
    /// Defines a resource, or updates the options of an existing one.
    pub fn define(&self, name: Atom, config: ResourceConfig) -> Result<(), StoreError> {
        if config.primary_key.is_empty() {
            return Err(StoreError::BadRequest(
                "primary_key must name at least one field".into(),
            ));
        }
        let mut resources = self.resources.write();
        match resources.get(&name) {
            Some(existing) => existing.reconfigure(config),
            None => {
                resources.insert(name, Arc::new(Resource::new(name, config)));
                Ok(())
            }
        }
    }

    /// A defined resource.
    pub fn get(&self, name: Atom) -> Result<Arc<Resource>, StoreError> {
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

    /// Total records over all resources.
    pub fn total_records(&self) -> usize {
        self.resources.read().values().map(|r| r.len()).sum()
    }
}

struct Index {
    records: HashMap<Key, Arc<RecordActor>>,
    identities: Vec<HashMap<Key, Key>>,
}

/// One resource and its records.
pub struct Resource {
    /// The resource's name.
    pub name: Atom,
    config: RwLock<Arc<ResourceConfig>>,
    index: RwLock<Index>,
}

impl Resource {
    fn new(name: Atom, config: ResourceConfig) -> Resource {
        let identities = vec![HashMap::new(); config.identities.len()];
        Resource {
            name,
            config: RwLock::new(Arc::new(config)),
            index: RwLock::new(Index {
                records: HashMap::new(),
                identities,
            }),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<ResourceConfig> {
        self.config.read().clone()
    }

    fn reconfigure(&self, config: ResourceConfig) -> Result<(), StoreError> {
        let mut index = self.index.write();
        let old = self.config();
        if old.primary_key != config.primary_key && !index.records.is_empty() {
            return Err(StoreError::PrimaryKeyMismatch(old.primary_key.clone()));
        }
        if old.identities != config.identities {
            // Rebuild the identity indexes from the records' committed state.
            let mut rebuilt = vec![HashMap::new(); config.identities.len()];
            for (key, actor) in &index.records {
                if let Some(record) = actor.committed() {
                    for (i, identity) in config.identities.iter().enumerate() {
                        if let Some(values) = identity_key(&identity.fields, &record) {
                            rebuilt[i].entry(values).or_insert_with(|| key.clone());
                        }
                    }
                }
            }
            index.identities = rebuilt;
        }
        *self.config.write() = Arc::new(config);
        Ok(())
    }

    /// Number of live records.
    pub fn len(&self) -> usize {
        self.index.read().records.len()
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
                .zip(key.0.iter())
                .map(|(f, v)| (Value::Atom(*f), v.clone()))
                .collect(),
        )
    }

    /// The actor of the record with `key`.
    pub fn lookup(&self, key: &Key) -> Option<Arc<RecordActor>> {
        self.index.read().records.get(key).cloned()
    }

    /// The actor of the record whose `fields` equal those of `record`, for upserts: `fields`
    /// must be the primary key or an identity. `Ok(None)` when no record has those values.
    pub fn find_by(
        &self,
        fields: &[Atom],
        record: &Record,
    ) -> Result<Option<Arc<RecordActor>>, StoreError> {
        let config = self.config();
        let same = |a: &[Atom]| a.len() == fields.len() && a.iter().all(|f| fields.contains(f));
        if same(&config.primary_key) {
            let key = self.key_of(record)?;
            return Ok(self.lookup(&key));
        }
        let Some(i) = config.identities.iter().position(|id| same(&id.fields)) else {
            return Err(StoreError::UnknownUpsertKeys(fields.to_vec()));
        };
        let Some(values) = identity_key(&config.identities[i].fields, record) else {
            return Ok(None);
        };
        let index = self.index.read();
        Ok(index.identities[i]
            .get(&values)
            .and_then(|key| index.records.get(key))
            .cloned())
    }

    /// Adds a new record and its actor.
    pub fn insert(
        self: &Arc<Self>,
        node: &Node,
        record: Record,
    ) -> Result<(Arc<RecordActor>, Arc<Record>), StoreError> {
        let config = self.config();
        let key = key_from(&config.primary_key, |f| record.get(f))?;
        let record = Arc::new(record);
        let mut index = self.index.write();
        if index.records.contains_key(&key) {
            drop(index);
            return Err(StoreError::AlreadyExists(self.pk_value(&key)));
        }
        let claims = identity_claims(&config, &record);
        check_identities(&config, &index, &claims, None)?;
        let actor = RecordActor::new(self.clone(), record.clone(), node.timers.now());
        for (i, values) in claims {
            index.identities[i].insert(values, key.clone());
        }
        index.records.insert(key, actor.clone());
        Ok((actor, record))
    }

    /// Moves `actor` from `old`'s keys to `new`'s, refusing a key or identity in use.
    pub fn reindex(
        &self,
        actor: &Arc<RecordActor>,
        old: &Record,
        new: &Record,
    ) -> Result<(), StoreError> {
        let config = self.config();
        let old_key = key_from(&config.primary_key, |f| old.get(f))?;
        let new_key = key_from(&config.primary_key, |f| new.get(f))?;
        let old_claims = identity_claims(&config, old);
        let new_claims = identity_claims(&config, new);
        if old_key == new_key && old_claims == new_claims {
            return Ok(());
        }
        let mut index = self.index.write();
        if old_key != new_key && index.records.contains_key(&new_key) {
            drop(index);
            return Err(StoreError::AlreadyExists(self.pk_value(&new_key)));
        }
        check_identities(&config, &index, &new_claims, Some(&old_key))?;
        for (i, values) in &old_claims {
            if index.identities[*i].get(values) == Some(&old_key) {
                index.identities[*i].remove(values);
            }
        }
        for (i, values) in new_claims {
            index.identities[i].insert(values, new_key.clone());
        }
        if old_key != new_key {
            index.records.remove(&old_key);
            index.records.insert(new_key, actor.clone());
        }
        Ok(())
    }

    /// Removes `actor`, whose committed record is `record`, if it is still the one indexed.
    pub fn remove(&self, actor: &Arc<RecordActor>, record: &Record) -> bool {
        let config = self.config();
        let Ok(key) = key_from(&config.primary_key, |f| record.get(f)) else {
            return false;
        };
        let mut index = self.index.write();
        match index.records.get(&key) {
            Some(current) if Arc::ptr_eq(current, actor) => {}
            _ => return false,
        }
        index.records.remove(&key);
        for (i, values) in identity_claims(&config, record) {
            if index.identities[i].get(&values) == Some(&key) {
                index.identities[i].remove(&values);
            }
        }
        true
    }

    /// Removes every record; returns the actors removed (for their exit notifications).
    pub fn take_all(&self) -> Vec<Arc<RecordActor>> {
        let mut index = self.index.write();
        for identity in &mut index.identities {
            identity.clear();
        }
        index.records.drain().map(|(_, actor)| actor).collect()
    }

    /// Calls `visit` with every live record and its actor, under the read lock.
    pub fn scan(&self, mut visit: impl FnMut(&Arc<RecordActor>, &Arc<Record>)) {
        let index = self.index.read();
        for actor in index.records.values() {
            actor.with_committed(|record| visit(actor, record));
        }
    }
}

fn key_from<'a>(
    fields: &[Atom],
    get: impl Fn(Atom) -> Option<&'a Value>,
) -> Result<Key, StoreError> {
    let mut values = Vec::with_capacity(fields.len());
    let mut missing = Vec::new();
    for f in fields {
        match get(*f) {
            Some(v) if !v.is_nil() => values.push(v.clone()),
            _ => missing.push(*f),
        }
    }
    if missing.is_empty() {
        Ok(Key(values.into_boxed_slice()))
    } else {
        Err(StoreError::MissingPrimaryKey(missing))
    }
}

/// The identity key of `record`, or `None` when a field is nil or absent (nils are distinct).
fn identity_key(fields: &[Atom], record: &Record) -> Option<Key> {
    let mut values = Vec::with_capacity(fields.len());
    for f in fields {
        match record.get(*f) {
            Some(v) if !v.is_nil() => values.push(v.clone()),
            _ => return None,
        }
    }
    Some(Key(values.into_boxed_slice()))
}

fn identity_claims(config: &ResourceConfig, record: &Record) -> Vec<(usize, Key)> {
    config
        .identities
        .iter()
        .enumerate()
        .filter_map(|(i, id)| identity_key(&id.fields, record).map(|k| (i, k)))
        .collect()
}

fn check_identities(
    config: &ResourceConfig,
    index: &Index,
    claims: &[(usize, Key)],
    owner: Option<&Key>,
) -> Result<(), StoreError> {
    for (i, values) in claims {
        if let Some(holder) = index.identities[*i].get(values)
            && Some(holder) != owner
        {
            let identity = &config.identities[*i];
            let fields = Value::map(
                identity
                    .fields
                    .iter()
                    .zip(values.0.iter())
                    .map(|(f, v)| (Value::Atom(*f), v.clone()))
                    .collect(),
            );
            return Err(StoreError::IdentityConflict(identity.name.clone(), fields));
        }
    }
    Ok(())
}
