//! Who a member is, kept in its data directory (`--data-dir` with `--cluster`): its node name
//! and its Raft id, in [`MEMBER_FILE`] (a [`crate::storage::journal`] of one entry,
//! `{member, Name, Id}`). A member restarted with the same directory and name is the same
//! member to Raft: same id, its vote and log (see [`super::log_store`]) still its own.
//!
//! The directory belongs to one member: started under another name it is refused, and so is a
//! single node's directory (its records journal) — a cluster member keeps only the Raft log.

use super::types::NodeId;
use crate::storage::journal;
use crate::term::{Atom, Value};
use std::path::{Path, PathBuf};

/// The member's file in the data directory.
pub const MEMBER_FILE: &str = "member.id";

/// Why the data directory cannot be this member's.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The directory could not be made or read.
    #[error("cannot use the data directory {path}: {reason}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another member's directory.
    #[error("the data directory {path} belongs to the member {owner}, not to {name}")]
    Taken {
        /// The directory.
        path: PathBuf,
        /// Whose it is.
        owner: String,
        /// Who was started with it.
        name: String,
    },
}

fn member_entry(name: &str, id: NodeId) -> Value {
    Value::tuple(vec![
        Value::Atom(Atom::from_static("member")),
        Value::from(name),
        Value::Int(id as i64),
    ])
}

/// The Raft id of the member `name` kept in `dir`; a new one (written there) when `dir` holds
/// none yet. A directory holding a single node's journal is refused, unless `adopting`: the
/// single node itself becomes a member ([`super::convert`]).
pub fn load_or_create(dir: &Path, name: &str, adopting: bool) -> Result<NodeId, IdentityError> {
    let dir_error = |reason: String| IdentityError::Dir {
        path: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| dir_error(e.to_string()))?;
    let records = dir.join(crate::protocol::durable::JOURNAL_FILE);
    if records.exists() && !adopting {
        return Err(dir_error(format!(
            "it holds a single node's records ({}); a cluster member needs a directory of its own",
            records.display()
        )));
    }
    let path = dir.join(MEMBER_FILE);
    let (entries, _) = journal::read(&path).map_err(|e| dir_error(e.to_string()))?;
    if let Some(entry) = entries.first() {
        let (owner, id) = match entry.as_tuple() {
            Some([tag, owner, Value::Int(id)])
                if tag.as_atom().map(|a| a.as_str()) == Some("member") && *id >= 0 =>
            {
                let owner = owner.as_bytes().map(String::from_utf8_lossy);
                (owner.map(|o| o.into_owned()), *id as NodeId)
            }
            _ => (None, 0),
        };
        let Some(owner) = owner else {
            return Err(dir_error(format!("{} is not valid", path.display())));
        };
        if owner != name {
            return Err(IdentityError::Taken {
                path: dir.to_path_buf(),
                owner,
                name: name.to_string(),
            });
        }
        return Ok(id);
    }
    let id: NodeId = rand::random::<u64>() >> 1;
    journal::rewrite(&path, [member_entry(name, id)]).map_err(|e| dir_error(e.to_string()))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_keeps_its_id_and_its_directory() {
        let d = std::env::temp_dir().join(format!("ash-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let id = load_or_create(&d, "a@127.0.0.1", false).unwrap();
        assert_eq!(load_or_create(&d, "a@127.0.0.1", false).unwrap(), id);
        assert!(matches!(
            load_or_create(&d, "b@127.0.0.1", false),
            Err(IdentityError::Taken { .. })
        ));
        let single = d.join("single");
        std::fs::create_dir_all(&single).unwrap();
        std::fs::write(single.join(crate::protocol::durable::JOURNAL_FILE), b"").unwrap();
        assert!(matches!(
            load_or_create(&single, "a@127.0.0.1", false),
            Err(IdentityError::Dir { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }
}
