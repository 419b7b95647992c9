//! Parsers for the arguments requests share: resources, records, primary keys, field lists,
//! option maps, timeouts, filters. Every error says, in words, what is wrong with the term.

use super::error::{Error, Result, bad};
use crate::query::expr::{Atomics, parse_atomics};
use crate::query::filter::Expr;
use crate::term::{Atom, Record, Value};

/// Checks that a request tagged `tag` has one of the `expected` argument counts.
pub fn arity(tag: &str, args: &[Value], expected: &[usize], form: &str) -> Result<()> {
    if expected.contains(&args.len()) {
        Ok(())
    } else {
        bad(format!("{tag} must be {form}"))
    }
}

/// A resource, or one tenant's namespace of it: `Resource` or `{Resource, Tenant}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRef {
    /// The resource's name.
    pub name: Atom,
    /// The tenant, if any.
    pub tenant: Option<Value>,
}

/// A resource name (no tenant: `define` and `subscribe` take these).
pub fn resource_name(v: &Value) -> Result<Atom> {
    v.as_atom()
        .ok_or_else(|| Error::BadRequest(format!("a resource must be an atom, got: {v:?}")))
}

/// `Resource` or `{Resource, Tenant}`.
pub fn resource(v: &Value) -> Result<ResourceRef> {
    match v {
        Value::Atom(name) => Ok(ResourceRef {
            name: *name,
            tenant: None,
        }),
        Value::Tuple(items) if items.len() == 2 && items[0].as_atom().is_some() => {
            Ok(ResourceRef {
                name: items[0].as_atom().expect("checked"),
                tenant: Some(items[1].clone()),
            })
        }
        _ => bad(format!(
            "a resource must be an atom or {{Resource, Tenant}}, got: {v:?}"
        )),
    }
}

/// A record (a map with atom keys); `what` names it in errors.
pub fn record(v: &Value, what: &str) -> Result<Record> {
    Record::from_map(v).map_err(|e| Error::BadRequest(format!("{what}: {e}")))
}

/// A primary key: a map of its fields.
pub fn pk(v: &Value) -> Result<Value> {
    if v.as_map().is_some() {
        Ok(v.clone())
    } else {
        bad(format!(
            "a primary key must be a map of its fields, got: {v:?}"
        ))
    }
}

/// A list of atoms; `what` names it in errors.
pub fn fields(v: &Value, what: &str) -> Result<Vec<Atom>> {
    v.as_list()
        .and_then(|items| items.iter().map(Value::as_atom).collect::<Option<Vec<_>>>())
        .ok_or_else(|| Error::BadRequest(format!("{what} must be a list of atoms, got: {v:?}")))
}

/// An options map of the request `what`.
pub fn opts<'a>(v: &'a Value, what: &str) -> Result<&'a [(Value, Value)]> {
    v.as_map()
        .ok_or_else(|| Error::BadRequest(format!("{what} options must be a map, got: {v:?}")))
}

/// The name of an option key, if it is an atom.
pub fn key(k: &Value) -> Option<&'static str> {
    k.as_atom().map(|a| a.as_str())
}

/// A filter expression.
pub fn filter(v: &Value) -> Result<Expr> {
    Expr::parse(v).map_err(Error::BadRequest)
}

/// `#{filter => Expr | nil}`, the options of update and destroy.
pub fn filter_opts(v: &Value, what: &str) -> Result<Option<Expr>> {
    let mut out = None;
    for (k, val) in opts(v, what)? {
        match key(k) {
            Some("filter") if val.is_nil() => out = None,
            Some("filter") => out = Some(filter(val)?),
            _ => return bad(format!("unknown {what} option {k:?} (expected filter)")),
        }
    }
    Ok(out)
}

/// `[{Field, VExpr}]`.
pub fn atomics(v: &Value) -> Result<Atomics> {
    parse_atomics(v).map_err(Error::BadRequest)
}

/// `#{filter => Expr | nil, atomics => [{Field, VExpr}]}`, the options of an update.
pub fn update_opts(v: &Value, what: &str) -> Result<(Option<Expr>, Atomics)> {
    let mut out = (None, Vec::new());
    for (k, val) in opts(v, what)? {
        match key(k) {
            Some("filter") if val.is_nil() => out.0 = None,
            Some("filter") => out.0 = Some(filter(val)?),
            Some("atomics") => out.1 = atomics(val)?,
            _ => {
                return bad(format!(
                    "unknown {what} option {k:?} (expected filter or atomics)"
                ));
            }
        }
    }
    Ok(out)
}

/// Milliseconds or `infinity` (`None`).
pub fn timeout(v: &Value, what: &str) -> Result<Option<u64>> {
    match v {
        Value::Atom(a) if a.as_str() == "infinity" => Ok(None),
        Value::Int(n) if *n >= 0 => Ok(Some(*n as u64)),
        _ => bad(format!(
            "{what} must be a non-negative integer of milliseconds or infinity, got: {v:?}"
        )),
    }
}

/// A non-negative integer.
pub fn count(v: &Value, what: &str) -> Result<u64> {
    match v {
        Value::Int(n) if *n >= 0 => Ok(*n as u64),
        _ => bad(format!("{what} must be a non-negative integer, got: {v:?}")),
    }
}
