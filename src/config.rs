//! Resources defined at start-up from a JSON file (`ash-gen-server start --resources FILE`), so
//! a node serving plain Erlang clients has its resources before the first request:
//!
//! ```json
//! [
//!   {"resource": "session", "primary_key": ["id"], "inactivity_timeout": 300000},
//!   {"resource": "user", "primary_key": ["id"], "identities": [{"name": "email", "fields": ["email"]}]}
//! ]
//! ```
//!
//! Every field but `resource` and `primary_key` is optional, with the defaults of `define`
//! (docs/PROTOCOL.md); a timeout of `null` means `infinity`.

use crate::record::{Identity, ResourceConfig, RestartPolicy, Store};
use crate::term::{Atom, Value};
use serde::Deserialize;

/// One resource of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// The resource's name (an atom).
    pub resource: String,
    /// Primary-key fields.
    pub primary_key: Vec<String>,
    /// Milliseconds, or `null` for infinity.
    #[serde(default)]
    pub inactivity_timeout: Option<u64>,
    /// Milliseconds, or `null` for infinity.
    #[serde(default)]
    pub maximum_lifetime: Option<u64>,
    /// Unique identities.
    #[serde(default)]
    pub identities: Vec<IdentitySpec>,
    /// Restart intensity: failures allowed...
    #[serde(default)]
    pub max_restarts: Option<u32>,
    /// ... within this many seconds.
    #[serde(default)]
    pub max_seconds: Option<u64>,
    /// Milliseconds an expiry handler has to destroy an expired record.
    #[serde(default)]
    pub expiry_grace: Option<u64>,
}

/// One identity of a resource.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    /// Its name (an atom).
    pub name: String,
    /// Its fields.
    pub fields: Vec<String>,
}

fn atom(name: &str) -> Result<Atom, String> {
    Atom::new(name).map_err(|e| e.to_string())
}

fn atoms(names: &[String]) -> Result<Vec<Atom>, String> {
    names.iter().map(|n| atom(n)).collect()
}

impl ResourceSpec {
    /// The resource's name and its `define` configuration.
    pub fn to_config(&self) -> Result<(Atom, ResourceConfig), String> {
        let mut config = ResourceConfig::new(atoms(&self.primary_key)?);
        config.inactivity_timeout = self.inactivity_timeout;
        config.maximum_lifetime = self.maximum_lifetime;
        for identity in &self.identities {
            config.identities.push(Identity::new(
                Value::Atom(atom(&identity.name)?),
                atoms(&identity.fields)?,
            ));
        }
        let defaults = RestartPolicy::default();
        config.restart = RestartPolicy {
            max_restarts: self.max_restarts.unwrap_or(defaults.max_restarts),
            max_seconds: self.max_seconds.unwrap_or(defaults.max_seconds),
        };
        if let Some(grace) = self.expiry_grace {
            config.expiry_grace = grace;
        }
        Ok((atom(&self.resource)?, config))
    }
}

/// Reads a resources file and defines each resource in `store`; returns how many.
pub fn define_from_json(store: &Store, json: &str) -> Result<usize, String> {
    let specs: Vec<ResourceSpec> =
        serde_json::from_str(json).map_err(|e| format!("bad resources file: {e}"))?;
    for spec in &specs {
        let (name, config) = spec.to_config()?;
        store
            .define(name, config)
            .map_err(|e| format!("cannot define {}: {e:?}", spec.resource))?;
    }
    Ok(specs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defines_every_resource_of_the_file() {
        let store = Store::default();
        let n = define_from_json(
            &store,
            r#"[
                {"resource": "session", "primary_key": ["id"], "inactivity_timeout": 300000},
                {"resource": "user", "primary_key": ["org", "id"],
                 "identities": [{"name": "email", "fields": ["email"]}],
                 "max_restarts": 1, "maximum_lifetime": null}
            ]"#,
        )
        .unwrap();
        assert_eq!(n, 2);
        let session = store.get(Atom::new("session").unwrap()).unwrap().config();
        assert_eq!(session.inactivity_timeout, Some(300_000));
        assert_eq!(session.maximum_lifetime, None);
        let user = store.get(Atom::new("user").unwrap()).unwrap().config();
        assert_eq!(user.primary_key.len(), 2);
        assert_eq!(user.identities[0].fields, vec![Atom::new("email").unwrap()]);
        assert_eq!(user.restart.max_restarts, 1);
    }

    #[test]
    fn mistakes_are_reported() {
        let store = Store::default();
        let typo = define_from_json(
            &store,
            r#"[{"resource": "a", "primary_key": ["id"], "inactivty_timeout": 5}]"#,
        );
        assert!(typo.unwrap_err().contains("inactivty_timeout"));
        assert!(define_from_json(&store, r#"[{"resource": "a", "primary_key": []}]"#).is_err());
        assert!(define_from_json(&store, "not json").is_err());
    }
}
