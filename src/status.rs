//! `ash-gen-server status`: what a node holds, for an operator, from its `stats`, `resources`
//! and `info` replies — as text for people or as JSON for scripts.

use crate::client::{self, CallError};
use crate::term::{Atom, Value};
use crate::wire::tls::DistTls;
use erl_dist::node::NodeName;
use serde_json::json;
use std::time::Duration;

/// One resource on the node.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceStatus {
    /// Its name.
    pub name: String,
    /// Records without tenant.
    pub records: i64,
    /// `inactivity_timeout` in ms (`None`: infinity).
    pub inactivity_timeout: Option<i64>,
    /// `maximum_lifetime` in ms (`None`: infinity).
    pub maximum_lifetime: Option<i64>,
}

/// What `status` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The node.
    pub node: String,
    /// Records in all resources and tenants.
    pub records: i64,
    /// Connected peers.
    pub peers: Vec<String>,
    /// Milliseconds since the node started.
    pub uptime_ms: i64,
    /// Resident memory, if known.
    pub rss_bytes: Option<i64>,
    /// Record processes with a pid.
    pub record_pids: i64,
    /// Subscribed expiry handlers.
    pub expiry_handlers: i64,
    /// The node's instance id.
    pub instance_id: String,
    /// The resources.
    pub resources: Vec<ResourceStatus>,
    /// The cluster, from `cluster`.
    pub cluster: ClusterStatus,
}

/// The cluster the node belongs to (a cluster of one without `--cluster`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterStatus {
    /// Every member.
    pub members: Vec<String>,
    /// The members that vote.
    pub voters: Vec<String>,
    /// The leader, if there is one.
    pub leader: Option<String>,
    /// Whether it has a leader and every voter it should, all reachable.
    pub healthy: bool,
    /// `--replicas`.
    pub replicas: i64,
    /// Whether it admits nodes that join (false while a single node becoming a member takes
    /// its records in; nodes that do not say are taken to admit).
    pub admitting: bool,
    /// Its shards' Raft groups (`--shards` > 1; empty with one group).
    pub groups: Vec<GroupStatus>,
}

/// One shard's Raft group of a cluster started with `--shards` > 1.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupStatus {
    /// Its number (0 is the cluster's directory, on every member).
    pub group: i64,
    /// Its leader, if it has one.
    pub leader: Option<String>,
    /// Whether it has a leader and its full replica count.
    pub healthy: bool,
    /// Whether its voters are the holders placement chose (no move under way).
    pub settled: bool,
    /// The members holding a copy that vote.
    pub holders: Vec<String>,
}

fn leader_of(map: &Value) -> Option<String> {
    field(map, "leader")
        .and_then(Value::as_atom)
        .filter(|a| a.as_str() != "undefined")
        .map(|a| a.as_str().to_string())
}

fn flag(map: &Value, key: &str) -> bool {
    field(map, key)
        .and_then(Value::as_atom)
        .is_some_and(|a| a.as_str() == "true")
}

fn groups(cluster: &Value) -> Vec<GroupStatus> {
    let list = field(cluster, "groups")
        .and_then(Value::as_list)
        .unwrap_or(&[]);
    list.iter()
        .map(|g| GroupStatus {
            group: int(g, "group").unwrap_or(-1),
            leader: leader_of(g),
            healthy: flag(g, "healthy"),
            settled: flag(g, "settled"),
            holders: names(g, "holders"),
        })
        .collect()
}

fn names(map: &Value, key: &str) -> Vec<String> {
    field(map, key)
        .and_then(Value::as_list)
        .unwrap_or(&[])
        .iter()
        .filter_map(|p| p.as_atom().map(|a| a.as_str().to_string()))
        .collect()
}

fn field<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.map_get_atom(Atom::new(key).ok()?)
}

fn int(map: &Value, key: &str) -> Option<i64> {
    field(map, key).and_then(Value::as_int)
}

fn ok_body(reply: Value) -> Result<Value, CallError> {
    match reply {
        Value::Tuple(items)
            if items.len() == 2 && items[0].as_atom().is_some_and(|a| a.as_str() == "ok") =>
        {
            Ok(items.into_vec().pop().expect("two elements"))
        }
        other => Err(CallError::Connection(format!("unexpected reply {other:?}"))),
    }
}

impl Status {
    /// Asks `node` for its status (over TLS distribution when `tls` is given).
    pub async fn fetch(
        node: &NodeName,
        cookie: &str,
        epmd_port: u16,
        tls: Option<&DistTls>,
        timeout: Duration,
    ) -> Result<Status, CallError> {
        let call = |request: Value| ask(node, cookie, epmd_port, tls, request, timeout);
        let atom = |s: &str| Value::Atom(Atom::new(s).expect("a short atom"));
        let stats = ok_body(call(atom("stats")).await?)?;
        let cluster = ok_body(call(atom("cluster")).await?)?;
        let cluster = ClusterStatus {
            members: names(&cluster, "members"),
            voters: names(&cluster, "voters"),
            leader: leader_of(&cluster),
            healthy: flag(&cluster, "healthy"),
            replicas: int(&cluster, "replicas").unwrap_or(1),
            admitting: field(&cluster, "admitting")
                .and_then(Value::as_atom)
                .is_none_or(|a| a.as_str() == "true"),
            groups: groups(&cluster),
        };
        let resource_names = ok_body(call(atom("resources")).await?)?;
        let mut resources = Vec::new();
        for name in resource_names.as_list().unwrap_or(&[]) {
            let info = ok_body(call(Value::pair(atom("info"), name.clone())).await?)?;
            resources.push(ResourceStatus {
                name: name
                    .as_atom()
                    .map(|a| a.as_str().to_string())
                    .unwrap_or_default(),
                records: int(&info, "count").unwrap_or(0),
                inactivity_timeout: int(&info, "inactivity_timeout"),
                maximum_lifetime: int(&info, "maximum_lifetime"),
            });
        }
        let peers = names(&stats, "peers");
        Ok(Status {
            node: node.to_string(),
            records: int(&stats, "records").unwrap_or(0),
            peers,
            uptime_ms: int(&stats, "uptime_ms").unwrap_or(0),
            rss_bytes: int(&stats, "rss_bytes"),
            record_pids: int(&stats, "record_pids").unwrap_or(0),
            expiry_handlers: int(&stats, "expiry_handlers").unwrap_or(0),
            instance_id: field(&stats, "instance_id")
                .and_then(Value::as_bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
            resources,
            cluster,
        })
    }

    fn cluster_line(&self) -> String {
        let c = &self.cluster;
        if c.members.len() <= 1 && c.replicas <= 1 && c.admitting {
            return "single node".into();
        }
        format!(
            "{} ({} members, {} voting of {} replicas, leader {}){}",
            if c.healthy { "healthy" } else { "UNHEALTHY" },
            c.members.len(),
            c.voters.len(),
            c.replicas,
            c.leader.as_deref().unwrap_or("none"),
            if c.admitting {
                ""
            } else {
                "; admitting nobody yet: taking a single node's records in"
            }
        )
    }

    /// The groups line and, under it, each group that is unhealthy or moving (`None` with
    /// one group).
    fn groups_lines(&self) -> Option<String> {
        let groups = &self.cluster.groups;
        if groups.len() <= 1 {
            return None;
        }
        let count = |pred: &dyn Fn(&GroupStatus) -> bool| groups.iter().filter(|g| pred(g)).count();
        let mut out = format!(
            "groups    {}: {} healthy, {} moving; this node holds {}, leads {}\n",
            groups.len(),
            count(&|g| g.healthy),
            count(&|g| !g.settled),
            // Group 0 is on every member, voting or not.
            count(&|g| {
                g.holders.contains(&self.node)
                    || (g.group == 0 && self.cluster.members.contains(&self.node))
            }),
            count(&|g| g.leader.as_deref() == Some(&self.node)),
        );
        for g in groups.iter().filter(|g| !g.healthy || !g.settled) {
            out.push_str(&format!(
                "  group {:<4} {}{}  leader {}  holders {}\n",
                g.group,
                if g.healthy { "healthy" } else { "UNHEALTHY" },
                if g.settled { "" } else { ", moving" },
                g.leader.as_deref().unwrap_or("none"),
                g.holders.join(", ")
            ));
        }
        Some(out)
    }

    /// The status as text, for people.
    pub fn human(&self) -> String {
        let ms = |v: Option<i64>| v.map_or("infinity".to_string(), |n| format!("{n} ms"));
        let mut out = format!(
            "node      {}\nuptime    {}\nmemory    {}\nrecords   {} ({} with a pid)\nhandlers  {} expiry handler(s)\ncluster   {}\npeers     {}\n",
            self.node,
            human_duration(self.uptime_ms),
            self.rss_bytes.map_or("unknown".to_string(), |b| format!(
                "{:.1} MiB",
                b as f64 / 1048576.0
            )),
            self.records,
            self.record_pids,
            self.expiry_handlers,
            self.cluster_line(),
            if self.peers.is_empty() {
                "none".to_string()
            } else {
                self.peers.join(", ")
            },
        );
        if let Some(groups) = self.groups_lines() {
            out.push_str(&groups);
        }
        out.push_str(&format!("resources {}\n", self.resources.len()));
        for r in &self.resources {
            out.push_str(&format!(
                "  {:<40} {:>10} records  inactivity {}  lifetime {}\n",
                r.name,
                r.records,
                ms(r.inactivity_timeout),
                ms(r.maximum_lifetime)
            ));
        }
        out
    }

    /// The status as JSON, for scripts.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "node": self.node,
            "instance_id": self.instance_id,
            "uptime_ms": self.uptime_ms,
            "rss_bytes": self.rss_bytes,
            "records": self.records,
            "record_pids": self.record_pids,
            "expiry_handlers": self.expiry_handlers,
            "peers": self.peers,
            "cluster": {
                "members": self.cluster.members,
                "voters": self.cluster.voters,
                "leader": self.cluster.leader,
                "healthy": self.cluster.healthy,
                "replicas": self.cluster.replicas,
                "admitting": self.cluster.admitting,
                "groups": self.cluster.groups.iter().map(|g| json!({
                    "group": g.group,
                    "leader": g.leader,
                    "healthy": g.healthy,
                    "settled": g.settled,
                    "holders": g.holders,
                })).collect::<Vec<_>>(),
            },
            "resources": self.resources.iter().map(|r| json!({
                "name": r.name,
                "records": r.records,
                "inactivity_timeout_ms": r.inactivity_timeout,
                "maximum_lifetime_ms": r.maximum_lifetime,
            })).collect::<Vec<_>>(),
        })
    }
}

async fn ask(
    node: &NodeName,
    cookie: &str,
    epmd_port: u16,
    tls: Option<&DistTls>,
    request: Value,
    timeout: Duration,
) -> Result<Value, CallError> {
    client::call(
        node,
        cookie,
        epmd_port,
        tls,
        "ash_gen_server",
        &request,
        timeout,
    )
    .await
}

fn human_duration(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(cluster: ClusterStatus) -> Status {
        Status {
            node: "a@h".into(),
            records: 0,
            peers: Vec::new(),
            uptime_ms: 0,
            rss_bytes: None,
            record_pids: 0,
            expiry_handlers: 0,
            instance_id: String::new(),
            resources: Vec::new(),
            cluster,
        }
    }

    #[test]
    fn the_cluster_line_says_whether_members_are_admitted() {
        let one = |admitting| ClusterStatus {
            members: vec!["a@h".into()],
            voters: vec!["a@h".into()],
            leader: Some("a@h".into()),
            healthy: true,
            replicas: 1,
            admitting,
            groups: Vec::new(),
        };
        assert!(
            status(one(true))
                .human()
                .contains("cluster   single node\n")
        );
        // A single node becoming a member: one member, admitting nobody yet.
        let converting = status(one(false));
        assert!(
            converting.human().contains(
                "cluster   healthy (1 members, 1 voting of 1 replicas, leader a@h); admitting nobody yet"
            ),
            "{}",
            converting.human()
        );
        assert_eq!(converting.json()["cluster"]["admitting"], false);
    }

    #[test]
    fn groups_are_summed_up_and_the_troubled_ones_listed() {
        let group = |group, leader: Option<&str>, healthy, settled| GroupStatus {
            group,
            leader: leader.map(Into::into),
            healthy,
            settled,
            holders: vec!["a@h".into(), "b@h".into()],
        };
        let cluster = ClusterStatus {
            members: vec!["a@h".into(), "b@h".into(), "c@h".into()],
            voters: vec!["a@h".into(), "b@h".into()],
            leader: Some("a@h".into()),
            healthy: false,
            replicas: 2,
            admitting: true,
            groups: vec![
                group(0, Some("a@h"), true, true),
                group(1, Some("b@h"), true, false),
                group(2, None, false, true),
                group(3, Some("a@h"), true, true),
            ],
        };
        let text = status(cluster).human();
        assert!(
            text.contains("groups    4: 3 healthy, 1 moving; this node holds 4, leads 2\n"),
            "{text}"
        );
        assert!(
            text.contains("  group 1    healthy, moving  leader b@h  holders a@h, b@h\n"),
            "{text}"
        );
        assert!(
            text.contains("  group 2    UNHEALTHY  leader none  holders a@h, b@h\n"),
            "{text}"
        );
        assert!(
            !text.contains("group 0 ") && !text.contains("group 3 "),
            "{text}"
        );
        let one = status(ClusterStatus::default()).human();
        assert!(!one.contains("groups"), "{one}");
    }
}
