//! Expiry in a cluster: every member holds every record, but only the leader's timers act.
//! An expired record is announced to expiry handlers by the leader only, and one without a
//! handler is destroyed through the log (`{destroy, Resource, PK}`), so that every replica
//! removes it alike. A member that becomes leader restarts every record's inactivity timeout:
//! the reads that kept records alive were served by the old leader, so a record may outlive
//! its timeout by up to one timeout after a failover, never expire early.
//!
//! The authority is handed to the record service before Raft starts: while a restarted member
//! applies its log again, no record expires on its own, even one whose lifetime has run out
//! (the leader's timers destroy it through the log).

use super::Cluster;
use crate::node::Mailbox;
use crate::record::RecordService;
use crate::record::expiry::ExpiryAuthority;
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
