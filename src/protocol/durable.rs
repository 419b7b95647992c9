//! Durable records (`--data-dir DIR`): at start the journal in `DIR` is replayed into the
//! record service — definitions, then every record as last written, with its creation time so
//! its maximum lifetime goes on counting — and rewritten as a snapshot of that state; from then
//! on every change is journaled before it is acknowledged.
//!
//! A restored record's inactivity timer starts again at the restart (reads are not journaled,
//! so a record may live up to one inactivity timeout longer than without the restart, never
//! shorter); its maximum lifetime keeps counting from its creation.

use super::cmd::define::Define;
use super::service::Service;
use crate::record::RecordService;
use crate::record::registry::wall_ms;
use crate::storage::journal;
use crate::storage::{FsyncPolicy, Journal, JournalError};
use crate::term::{Atom, Record, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The journal's file name in the data directory.
pub const JOURNAL_FILE: &str = "journal.log";

/// What a restart found in the data directory.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Restored {
    /// Resources defined.
    pub resources: usize,
    /// Records restored.
    pub records: usize,
    /// Bytes of a torn last write cut off the journal.
    pub cut_bytes: u64,
}

/// Why the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory could not be made.
    #[error("cannot use the data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// An entry makes no sense (the file was written by something else, or a bug).
    #[error("journal entry {index} is not valid: {reason}")]
    Entry {
        /// Its position.
        index: usize,
        /// Why.
        reason: String,
    },
}

fn atom_is(v: &Value, name: &str) -> bool {
    matches!(v, Value::Atom(a) if a.as_str() == name)
}

/// `Resource` or `{Resource, Tenant}` of an entry.
fn namespace(v: &Value) -> Option<(Atom, Option<Value>)> {
    match v {
        Value::Atom(a) => Some((*a, None)),
        Value::Tuple(items) if items.len() == 2 => {
            Some((items[0].as_atom()?, Some(items[1].clone())))
        }
        _ => None,
    }
}

/// Restores `dir` into `svc` and journals every change from now on. Returns the journal (for
/// its flush task) and what was restored.
pub fn open(
    svc: &Service,
    dir: &Path,
    policy: FsyncPolicy,
) -> Result<(Arc<Journal>, Restored), DataDirError> {
    std::fs::create_dir_all(dir).map_err(|source| DataDirError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(JOURNAL_FILE);
    let (entries, cut_bytes) = journal::read(&path)?;
    let mut restored = restore(&svc.records, &entries)?;
    restored.cut_bytes = cut_bytes;
    // The journal becomes a snapshot of what was restored, then records every change.
    journal::rewrite(&path, snapshot_terms(&svc.records))?;
    let journal = Arc::new(Journal::open(&path, policy)?);
    svc.records.store.attach_journal(journal.clone());
    Ok((journal, restored))
}

/// The state of `records` as journal entries: every definition, then every live record with
/// its creation time (`{put, Ref, Record, BornWallMs}`). [`restore`] reads them back; a
/// cluster member's Raft snapshot is made of them too.
pub fn snapshot_terms(records: &RecordService) -> Vec<Value> {
    let store = &records.store;
    let mut terms = Vec::with_capacity(store.total_records() + 8);
    for name in store.names() {
        if let Ok(r) = store.get(name) {
            terms.push(r.define_entry());
        }
    }
    for resource in store.all() {
        for (record, born_wall) in resource.records_with_birth() {
            terms.push(resource.put_entry(&record, born_wall));
        }
    }
    terms
}

/// Replays journal `entries` (definitions, then records as last written) into `records`: each
/// record keeps its creation time, so its maximum lifetime goes on counting; its inactivity
/// timer starts now. Records already there stay (a snapshot is installed into an emptied
/// service).
pub fn restore(records: &RecordService, entries: &[Value]) -> Result<Restored, DataDirError> {
    let store = &records.store;
    // The records as last written, per namespace and primary key, in first-written order.
    let mut latest: HashMap<(Value, Value), (usize, Record, i64)> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let bad = |reason: &str| DataDirError::Entry {
            index,
            reason: format!("{reason}: {entry:?}"),
        };
        let items = entry.as_tuple().ok_or_else(|| bad("not a tuple"))?;
        match items {
            [tag, name, opts] if atom_is(tag, "define") => {
                let define = Define::parse(&[name.clone(), opts.clone()])
                    .map_err(|e| bad(&e.to_string()))?;
                store
                    .define(define.resource, define.config)
                    .map_err(|e| bad(&e.to_string()))?;
            }
            [tag, ns, record, born] if atom_is(tag, "put") || atom_is(tag, "put_all") => {
                let (name, tenant) = namespace(ns).ok_or_else(|| bad("bad namespace"))?;
                let resource = store
                    .get_in(name, tenant.as_ref())
                    .map_err(|e| bad(&e.to_string()))?;
                let born = born.as_int().ok_or_else(|| bad("bad creation time"))?;
                // `put_all`: records created together (a bulk create, all or nothing).
                let list = if atom_is(tag, "put_all") {
                    record
                        .as_list()
                        .ok_or_else(|| bad("not a list of records"))?
                } else {
                    std::slice::from_ref(record)
                };
                for record in list {
                    let record = Record::from_map(record).map_err(|e| bad(&e.to_string()))?;
                    let key = resource.key_of(&record).map_err(|e| bad(&e.to_string()))?;
                    let slot = (ns.clone(), resource.pk_value(&key));
                    let order = latest.get(&slot).map_or(index, |(o, _, _)| *o);
                    latest.insert(slot, (order, record, born));
                }
            }
            [tag, ns, pk] if atom_is(tag, "delete") => {
                latest.remove(&(ns.clone(), pk.clone()));
            }
            [tag, ns] if atom_is(tag, "clear") => {
                latest.retain(|(n, _), _| n != ns);
            }
            _ => return Err(bad("unknown entry")),
        }
    }
    let mut latest: Vec<_> = latest.into_iter().collect();
    latest.sort_by_key(|(_, (order, _, _))| *order);
    let now = records.timers.now();
    let wall = wall_ms();
    let mut restored = Restored {
        resources: store.names().len(),
        records: 0,
        cut_bytes: 0,
    };
    for ((ns, _), (_, record, born_wall)) in latest {
        let (name, tenant) = namespace(&ns).expect("checked when read");
        let resource = store
            .get_in(name, tenant.as_ref())
            .expect("defined when read");
        let age = u64::try_from(wall.saturating_sub(born_wall)).unwrap_or(0);
        let born = now.saturating_sub(age);
        if let Ok((actor, _)) = resource.insert_born(record, now, born, born_wall) {
            actor.touch(records);
            restored.records += 1;
        }
    }
    Ok(restored)
}
