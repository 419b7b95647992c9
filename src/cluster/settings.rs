//! The settings every member of a cluster shares, checked when a member starts: `--shards`
//! (kept in a sharded member's data directory, and asked of a `--join` peer) and `--replicas`
//! (a member joining without one takes the cluster's; one given another refuses to start).
//! A member that disagreed would place records in groups the others do not have, or, once it
//! led, change how many members vote.

use crate::node::{Mailbox, Node};
use crate::term::{Atom, Value};
use erl_dist::node::NodeName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How many members vote when neither `--replicas` nor the cluster joined says.
pub const DEFAULT_REPLICAS: u16 = 3;

/// The file in a member's data directory naming its `--shards` (written when more than 1).
pub const SHARDS_FILE: &str = "shards";

/// How long each `--join` peer is given to connect and to describe its cluster.
const ASK_WAIT: Duration = Duration::from_secs(2);

/// A member's data directory holds the groups of the `--shards` it was started with: started
/// again with another number it would miss (or mix up) records, so it refuses to start. With
/// more than one shard the number is kept in `DIR/shards`; a directory without that file is a
/// member of one group (as before shards).
pub fn check_data_dir(dir: &Path, shards: u32) -> Result<(), String> {
    let file = dir.join(SHARDS_FILE);
    let kept =
        match std::fs::read_to_string(&file) {
            Ok(text) => Some(text.trim().parse::<u32>().map_err(|e| {
                format!("{} does not hold a number of shards: {e}", file.display())
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let member = dir.join(super::log_store::LOG_FILE).exists();
                member.then_some(1)
            }
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
    if let Some(kept) = kept
        && kept != shards
    {
        return Err(format!(
            "--shards {shards} differs from the {kept} shard(s) of the member in the data directory {}: start it with --shards {kept}",
            dir.display()
        ));
    }
    if shards > 1 && kept.is_none() {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&file, format!("{shards}\n")))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    Ok(())
}

/// What a member says of its cluster's settings (its `cluster` description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `shards`.
    pub shards: Option<i64>,
    /// `replicas`.
    pub replicas: Option<i64>,
}

impl Settings {
    /// The settings in a `{ok, #{shards => S, replicas => R, ...}}` reply; `None` for
    /// anything else (an error, a node that is no member).
    pub fn of(reply: &Value) -> Option<Settings> {
        let info = super::answer::ok_body(reply)?;
        let get = |key| {
            info.map_get_atom(Atom::from_static(key))
                .and_then(Value::as_int)
        };
        Some(Settings {
            shards: get("shards"),
            replicas: get("replicas"),
        })
    }

    /// Checks a member's own `shards` and `replicas` (when given) against these, the cluster's:
    /// the cluster's replicas, for a member given none to take.
    pub fn agree(
        &self,
        peer: &NodeName,
        shards: u32,
        replicas: Option<u16>,
    ) -> Result<Option<u16>, String> {
        if let Some(n) = self.shards
            && n != i64::from(shards)
        {
            return Err(format!(
                "--shards {shards} differs from the cluster's: {peer} splits the records into {n} shards; start every member with the same --shards"
            ));
        }
        let theirs = self.replicas.and_then(|r| u16::try_from(r).ok());
        match (replicas, theirs) {
            (Some(mine), Some(theirs)) if mine != theirs => Err(format!(
                "--replicas {mine} differs from the cluster's: {peer} keeps the records on {theirs} replicas; start every member with the same --replicas, or none to take the cluster's"
            )),
            _ => Ok(theirs),
        }
    }
}

/// A member joining `peers` asks the first member among them that answers for its cluster's
/// settings ([`Settings::agree`]): an error when this member's differ, else the cluster's
/// replicas (`None` when no member answered: one still starting, too, is not waited for). A
/// peer without a member's endpoint (a single node, which describes itself as a cluster of
/// one, or a BEAM node) says nothing of the cluster.
pub async fn agree(
    node: &Arc<Node>,
    peers: &[NodeName],
    shards: u32,
    replicas: Option<u16>,
) -> Result<Option<u16>, String> {
    let mailbox = Mailbox::new(node);
    for peer in peers {
        if !matches!(
            tokio::time::timeout(ASK_WAIT, node.connect(peer)).await,
            Ok(Ok(()))
        ) {
            continue;
        }
        let ping = Value::Atom(Atom::from_static("ping"));
        let endpoint = super::answer::ENDPOINT_NAME;
        if mailbox
            .call_remote_monitored(peer, endpoint, ping, ASK_WAIT)
            .await
            .is_err()
        {
            continue;
        }
        let ask = mailbox.call_remote_monitored(
            peer,
            crate::protocol::SERVER_NAME,
            Value::Atom(Atom::from_static("cluster")),
            ASK_WAIT,
        );
        // Not running yet (a member starting too), or not answering: not waited for.
        let Ok(reply) = ask.await else { continue };
        if let Some(settings) = Settings::of(&reply) {
            return settings.agree(peer, shards, replicas);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    fn peer() -> NodeName {
        "a@127.0.0.1".parse().expect("a node name")
    }

    #[test]
    fn a_member_given_no_replicas_takes_the_clusters() {
        let s = Settings::of(&parse_term("{ok, #{shards => 1, replicas => 1}}").unwrap()).unwrap();
        assert_eq!(s.agree(&peer(), 1, None), Ok(Some(1)));
        assert_eq!(s.agree(&peer(), 1, Some(1)), Ok(Some(1)));
    }

    #[test]
    fn other_replicas_or_shards_are_refused_saying_why() {
        let s = Settings::of(&parse_term("{ok, #{shards => 4, replicas => 3}}").unwrap()).unwrap();
        let e = s.agree(&peer(), 4, Some(2)).unwrap_err();
        assert!(e.contains("--replicas 2 differs from the cluster's"), "{e}");
        assert!(e.contains("3 replicas"), "{e}");
        let e = s.agree(&peer(), 2, None).unwrap_err();
        assert!(e.contains("--shards 2 differs from the cluster's"), "{e}");
    }

    #[test]
    fn an_error_or_a_description_without_them_says_nothing() {
        assert_eq!(
            Settings::of(&parse_term("{error, no_cluster}").unwrap()),
            None
        );
        let s = Settings::of(&parse_term("{ok, #{members => []}}").unwrap()).unwrap();
        assert_eq!(s.agree(&peer(), 2, Some(5)), Ok(None));
    }
}
