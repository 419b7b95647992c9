//! `{define, Resource, Opts}`: defines a resource, or changes the options of a defined one.

use crate::protocol::args::{self, key};
use crate::protocol::caller::Caller;
use crate::protocol::error::{Error, Result, bad};
use crate::protocol::reply;
use crate::protocol::service::Service;
use crate::query::Types;
use crate::record::{Identity, ResourceConfig, RestartPolicy};
use crate::term::{Atom, Value};

/// A `define`.
#[derive(Debug)]
pub struct Define {
    /// The resource.
    pub resource: Atom,
    /// Its configuration.
    pub config: ResourceConfig,
}

impl Define {
    /// Parses the arguments.
    pub fn parse(args: &[Value]) -> Result<Define> {
        args::arity("define", args, &[2], "{define, Resource, Opts}")?;
        let resource = args::resource_name(&args[0])?;
        let mut primary_key = None;
        let mut config = ResourceConfig::new(Vec::new());
        let mut restart = RestartPolicy::default();
        for (k, val) in args::opts(&args[1], "define")? {
            match key(k) {
                Some("primary_key") => primary_key = Some(args::fields(val, "primary_key")?),
                Some("inactivity_timeout") => {
                    config.inactivity_timeout = args::timeout(val, "inactivity_timeout")?
                }
                Some("maximum_lifetime") => {
                    config.maximum_lifetime = args::timeout(val, "maximum_lifetime")?
                }
                Some("expiry_grace") => config.expiry_grace = args::count(val, "expiry_grace")?,
                Some("max_restarts") => {
                    restart.max_restarts = u32::try_from(args::count(val, "max_restarts")?)
                        .map_err(|_| Error::BadRequest("max_restarts is too large".into()))?
                }
                Some("max_seconds") => restart.max_seconds = args::count(val, "max_seconds")?,
                Some("identities") => config.identities = identities(val)?,
                Some("types") => {
                    config.types =
                        std::sync::Arc::new(Types::parse(val).map_err(Error::BadRequest)?)
                }
                _ => {
                    return bad(format!(
                        "unknown define option {k:?} (expected primary_key, inactivity_timeout, \
                         maximum_lifetime, identities, types, max_restarts, max_seconds or expiry_grace)"
                    ));
                }
            }
        }
        config.primary_key = match primary_key {
            Some(pk) if !pk.is_empty() => pk,
            _ => return bad("define needs primary_key => [Field, ...] with at least one field"),
        };
        config.restart = restart;
        Ok(Define { resource, config })
    }

    /// Serves it.
    pub fn execute(self, svc: &Service, from: Caller) {
        let result = svc
            .records
            .store
            .define(self.resource, self.config)
            .map(|()| reply::ok())
            .map_err(Error::from);
        svc.reply_result(&from, result);
    }
}

fn identities(val: &Value) -> Result<Vec<Identity>> {
    let items = val.as_list().ok_or_else(|| {
        Error::BadRequest(format!(
            "identities must be a list of {{Name, [Field]}}, got: {val:?}"
        ))
    })?;
    items
        .iter()
        .map(|item| match item.as_tuple() {
            Some([name, f]) => Ok(Identity::new(
                name.clone(),
                args::fields(f, "identity fields")?,
            )),
            Some([name, f, opts]) => {
                let mut identity = Identity::new(name.clone(), args::fields(f, "identity fields")?);
                for (k, v) in args::opts(opts, "identity")? {
                    match key(k) {
                        Some("where") if v.is_nil() => identity.filter = None,
                        Some("where") => identity.filter = Some(args::filter(v)?),
                        Some("nils_distinct") => {
                            identity.nils_distinct =
                                !matches!(v, Value::Atom(a) if a.as_str() == "false")
                        }
                        _ => {
                            return bad(format!(
                                "unknown identity option {k:?} (expected where or nils_distinct)"
                            ));
                        }
                    }
                }
                Ok(identity)
            }
            _ => bad(format!(
                "an identity must be {{Name, [Field]}} or {{Name, [Field], Opts}}, got: {item:?}"
            )),
        })
        .collect()
}
