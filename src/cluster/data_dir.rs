//! A member's Raft files in its data directory (`--data-dir`; a group `G` > 0 in
//! `DIR/group-G`): which they are, removing them for a new instance of the group, and setting
//! them aside when a group is formed again from this member's copy ([`super::recover`]).
//!
//! Only these files are touched: group 0's directory also holds the cluster's settings and the
//! other groups' directories.

use std::path::{Path, PathBuf};

/// The files of a member's Raft state in a data directory (and their half-written copies).
pub const RAFT_FILES: [&str; 6] = [
    super::log_store::LOG_FILE,
    "raft.new",
    super::snapshot::SNAPSHOT_FILE,
    "raft.snapshot.new",
    super::identity::MEMBER_FILE,
    "member.new",
];

/// Removes the Raft files from `dir`. Returns whether there were any.
pub fn remove(dir: &Path) -> std::io::Result<bool> {
    let mut found = false;
    for name in RAFT_FILES {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => found = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// Moves the Raft files of `dir` into its new subdirectory `aside` (kept for the operator; the
/// member starts a new instance in `dir`). Returns the subdirectory. On an error (the
/// directory not flushed after the moves included) the files moved so far go back.
pub fn set_aside(dir: &Path, aside: &str) -> std::io::Result<PathBuf> {
    let to = dir.join(aside);
    std::fs::create_dir(&to)?;
    let mut moved = Vec::new();
    let done = (|| {
        for name in RAFT_FILES {
            match std::fs::rename(dir.join(name), to.join(name)) {
                Ok(()) => moved.push(name),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = done {
        // The caller goes on with the files where they were.
        for name in moved {
            let _ = std::fs::rename(to.join(name), dir.join(name));
        }
        let _ = std::fs::remove_dir(&to);
        return Err(e);
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ags_data_dir_{test}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("group-1")).unwrap();
        for name in [
            RAFT_FILES[0],
            RAFT_FILES[2],
            RAFT_FILES[4],
            "cluster.settings",
        ] {
            std::fs::write(dir.join(name), name).unwrap();
        }
        std::fs::write(dir.join("group-1").join(RAFT_FILES[0]), "other group").unwrap();
        dir
    }

    #[test]
    fn removing_leaves_the_settings_and_the_other_groups() {
        let dir = scratch("remove");
        assert!(remove(&dir).unwrap());
        for name in RAFT_FILES {
            assert!(!dir.join(name).exists(), "{name}");
        }
        assert!(dir.join("cluster.settings").exists());
        assert!(dir.join("group-1").join(RAFT_FILES[0]).exists());
        assert!(!remove(&dir).unwrap(), "nothing left to remove");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn set_aside_moves_the_raft_files_into_the_subdirectory() {
        let dir = scratch("aside");
        let aside = set_aside(&dir, "recovered-7").unwrap();
        assert_eq!(aside, dir.join("recovered-7"));
        for name in [RAFT_FILES[0], RAFT_FILES[2], RAFT_FILES[4]] {
            assert!(!dir.join(name).exists(), "{name}");
            assert_eq!(std::fs::read_to_string(aside.join(name)).unwrap(), name);
        }
        assert!(dir.join("cluster.settings").exists());
        assert!(dir.join("group-1").join(RAFT_FILES[0]).exists());
        // The same name again: refused, nothing moved.
        std::fs::write(dir.join(RAFT_FILES[0]), "newer").unwrap();
        assert!(set_aside(&dir, "recovered-7").is_err());
        assert_eq!(
            std::fs::read_to_string(dir.join(RAFT_FILES[0])).unwrap(),
            "newer"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
