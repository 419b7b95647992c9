//! Request terms: parsing what callers send into typed requests (see docs/PROTOCOL.md).
//!
//! Parsing never looks at the store: a request that parses can still name an unknown resource
//! or a missing record. Every error says, in words, what is wrong with the term.

use crate::query::filter::Expr;
use crate::query::{Aggregate, Query};
use crate::record::{Fault, Identity, ResourceConfig, RestartPolicy};
use crate::term::{Atom, Record, Value};

/// Options of an upsert as sent, before the resource's primary key is known.
#[derive(Debug, Clone, Default)]
pub struct UpsertOpts {
    /// `keys`; `None` for the primary key.
    pub keys: Option<Vec<Atom>>,
    /// `set`: an explicit map to merge into a matching record.
    pub set: Option<Record>,
    /// `fields`: which of the record's own fields to merge (`None` for all but the keys).
    pub fields: Option<Vec<Atom>>,
    /// `condition`.
    pub condition: Option<Expr>,
}

/// A request to `ash_gen_server`.
#[derive(Debug)]
pub enum Request {
    /// `{define, Resource, Opts}`.
    Define(Atom, ResourceConfig),
    /// `{create, Resource, Record}`.
    Create(Atom, Record),
    /// `{upsert, Resource, Record, Opts}`.
    Upsert(Atom, Record, UpsertOpts),
    /// `{bulk_create, Resource, [Record], Opts}`.
    BulkCreate(Atom, Vec<Record>, Option<UpsertOpts>),
    /// `{get, Resource, PK}`.
    Get(Atom, Value),
    /// `{update, Resource, PK, Changes}` and `{update, Resource, PK, Changes, Opts}`.
    Update(Atom, Value, Record, Option<Expr>),
    /// `{destroy, Resource, PK}` and `{destroy, Resource, PK, Opts}`.
    Destroy(Atom, Value, Option<Expr>),
    /// `{query, Resource, Query}`.
    Query(Atom, Query),
    /// `{aggregate, Resource, Query, [Aggregate]}`, or per group with
    /// `{aggregate, Resource, Query, [Aggregate], #{group_by => Field}}`.
    Aggregate(Atom, Query, Vec<Aggregate>, Option<Atom>),
    /// `{whereis, Resource, PK}`.
    Whereis(Atom, Value),
    /// `{keep_alive, Resource, PK}`.
    KeepAlive(Atom, Value),
    /// `subscribe` (every resource) or `{subscribe, [Resource]}`.
    Subscribe(Option<Vec<Atom>>),
    /// `unsubscribe`.
    Unsubscribe,
    /// `{info, Resource}`.
    Info(Atom),
    /// `resources`.
    Resources,
    /// `{clear, Resource}`.
    Clear(Atom),
    /// `ping`.
    Ping,
    /// `stats`.
    Stats,
    /// `{fault, Resource, PK, panic | error}`.
    Fault(Atom, Value, Fault),
}

/// Why a request could not be parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestError {
    /// A known request with a malformed argument.
    Bad(String),
    /// Not a request this node knows.
    Unknown,
}

fn bad<T>(message: impl Into<String>) -> Result<T, RequestError> {
    Err(RequestError::Bad(message.into()))
}

fn resource(v: &Value) -> Result<Atom, RequestError> {
    v.as_atom()
        .ok_or_else(|| RequestError::Bad(format!("a resource must be an atom, got: {v:?}")))
}

fn record(v: &Value, what: &str) -> Result<Record, RequestError> {
    Record::from_map(v).map_err(|e| RequestError::Bad(format!("{what}: {e}")))
}

fn pk(v: &Value) -> Result<Value, RequestError> {
    if v.as_map().is_some() {
        Ok(v.clone())
    } else {
        bad(format!(
            "a primary key must be a map of its fields, got: {v:?}"
        ))
    }
}

fn fields(v: &Value, what: &str) -> Result<Vec<Atom>, RequestError> {
    v.as_list()
        .and_then(|items| items.iter().map(Value::as_atom).collect::<Option<Vec<_>>>())
        .ok_or_else(|| RequestError::Bad(format!("{what} must be a list of atoms, got: {v:?}")))
}

fn opts<'a>(v: &'a Value, what: &str) -> Result<&'a [(Value, Value)], RequestError> {
    v.as_map()
        .ok_or_else(|| RequestError::Bad(format!("{what} options must be a map, got: {v:?}")))
}

/// Parses `#{filter => Expr}` (the options of update and destroy).
fn filter_opts(v: &Value, what: &str) -> Result<Option<Expr>, RequestError> {
    let mut filter = None;
    for (k, val) in opts(v, what)? {
        match k.as_atom().map(|a| a.as_str()) {
            Some("filter") if val.is_nil() => filter = None,
            Some("filter") => {
                filter = Some(Expr::parse(val).map_err(RequestError::Bad)?);
            }
            _ => return bad(format!("unknown {what} option {k:?} (expected filter)")),
        }
    }
    Ok(filter)
}

fn timeout(v: &Value, what: &str) -> Result<Option<u64>, RequestError> {
    match v {
        Value::Atom(a) if a.as_str() == "infinity" => Ok(None),
        Value::Int(n) if *n >= 0 => Ok(Some(*n as u64)),
        _ => bad(format!(
            "{what} must be a non-negative integer of milliseconds or infinity, got: {v:?}"
        )),
    }
}

fn count(v: &Value, what: &str) -> Result<u64, RequestError> {
    match v {
        Value::Int(n) if *n >= 0 => Ok(*n as u64),
        _ => bad(format!("{what} must be a non-negative integer, got: {v:?}")),
    }
}

fn define(name: Atom, v: &Value) -> Result<Request, RequestError> {
    let mut primary_key = None;
    let mut config = ResourceConfig::new(Vec::new());
    let mut restart = RestartPolicy::default();
    for (k, val) in opts(v, "define")? {
        match k.as_atom().map(|a| a.as_str()) {
            Some("primary_key") => primary_key = Some(fields(val, "primary_key")?),
            Some("inactivity_timeout") => {
                config.inactivity_timeout = timeout(val, "inactivity_timeout")?
            }
            Some("maximum_lifetime") => config.maximum_lifetime = timeout(val, "maximum_lifetime")?,
            Some("expiry_grace") => config.expiry_grace = count(val, "expiry_grace")?,
            Some("max_restarts") => {
                restart.max_restarts = u32::try_from(count(val, "max_restarts")?)
                    .map_err(|_| RequestError::Bad("max_restarts is too large".into()))?
            }
            Some("max_seconds") => restart.max_seconds = count(val, "max_seconds")?,
            Some("identities") => {
                let items = val.as_list().ok_or_else(|| {
                    RequestError::Bad(format!(
                        "identities must be a list of {{Name, [Field]}}, got: {val:?}"
                    ))
                })?;
                for item in items {
                    match item.as_tuple() {
                        Some([name, f]) => config.identities.push(Identity {
                            name: name.clone(),
                            fields: fields(f, "identity fields")?,
                        }),
                        _ => {
                            return bad(format!(
                                "an identity must be {{Name, [Field]}}, got: {item:?}"
                            ));
                        }
                    }
                }
            }
            _ => {
                return bad(format!(
                    "unknown define option {k:?} (expected primary_key, inactivity_timeout, \
                     maximum_lifetime, identities, max_restarts, max_seconds or expiry_grace)"
                ));
            }
        }
    }
    config.primary_key = match primary_key {
        Some(pk) if !pk.is_empty() => pk,
        _ => return bad("define needs primary_key => [Field, ...] with at least one field"),
    };
    config.restart = restart;
    Ok(Request::Define(name, config))
}

fn upsert_opts(v: &Value, bulk: bool) -> Result<UpsertOpts, RequestError> {
    let mut out = UpsertOpts::default();
    for (k, val) in opts(v, "upsert")? {
        match k.as_atom().map(|a| a.as_str()) {
            Some("keys") => out.keys = Some(fields(val, "keys")?),
            Some("set") => out.set = Some(record(val, "set")?),
            Some("fields") if matches!(val, Value::Atom(a) if a.as_str() == "all") => {
                out.fields = None
            }
            Some("fields") => out.fields = Some(fields(val, "fields")?),
            Some("condition") if val.is_nil() => out.condition = None,
            Some("condition") => out.condition = Some(Expr::parse(val).map_err(RequestError::Bad)?),
            Some("upsert") if bulk => {}
            _ => {
                return bad(format!(
                    "unknown upsert option {k:?} (expected keys, set, fields or condition)"
                ));
            }
        }
    }
    Ok(out)
}

fn fault(v: &Value) -> Result<Fault, RequestError> {
    match v.as_atom().map(|a| a.as_str()) {
        Some("panic") => Ok(Fault::Panic),
        Some("error") => Ok(Fault::Error),
        _ => bad(format!("a fault is panic or error, got: {v:?}")),
    }
}

/// Parses a request term.
pub fn parse(v: &Value) -> Result<Request, RequestError> {
    if let Value::Atom(a) = v {
        return match a.as_str() {
            "subscribe" => Ok(Request::Subscribe(None)),
            "unsubscribe" => Ok(Request::Unsubscribe),
            "resources" => Ok(Request::Resources),
            "ping" => Ok(Request::Ping),
            "stats" => Ok(Request::Stats),
            _ => Err(RequestError::Unknown),
        };
    }
    let Some(items) = v.as_tuple() else {
        return Err(RequestError::Unknown);
    };
    let Some(Value::Atom(tag)) = items.first() else {
        return Err(RequestError::Unknown);
    };
    let args = &items[1..];
    let arity = |expected: &[usize], form: &str| -> Result<(), RequestError> {
        if expected.contains(&args.len()) {
            Ok(())
        } else {
            bad(format!("{} must be {form}", tag.as_str()))
        }
    };
    match tag.as_str() {
        "define" => {
            arity(&[2], "{define, Resource, Opts}")?;
            define(resource(&args[0])?, &args[1])
        }
        "create" => {
            arity(&[2], "{create, Resource, Record}")?;
            Ok(Request::Create(
                resource(&args[0])?,
                record(&args[1], "record")?,
            ))
        }
        "upsert" => {
            arity(&[2, 3], "{upsert, Resource, Record, Opts}")?;
            let opts = match args.get(2) {
                Some(o) => upsert_opts(o, false)?,
                None => UpsertOpts::default(),
            };
            Ok(Request::Upsert(
                resource(&args[0])?,
                record(&args[1], "record")?,
                opts,
            ))
        }
        "bulk_create" => {
            arity(&[2, 3], "{bulk_create, Resource, [Record], Opts}")?;
            let list = args[1].as_list().ok_or_else(|| {
                RequestError::Bad(format!(
                    "bulk_create needs a list of records, got: {:?}",
                    args[1]
                ))
            })?;
            let records = list
                .iter()
                .enumerate()
                .map(|(i, r)| record(r, &format!("record {}", i + 1)))
                .collect::<Result<Vec<_>, _>>()?;
            let upsert = match args.get(2) {
                Some(o) => {
                    let is_upsert = opts(o, "bulk_create")?.iter().any(|(k, v)| {
                        matches!(k, Value::Atom(a) if a.as_str() == "upsert") && v.is_true()
                    });
                    let parsed = upsert_opts(o, true)?;
                    is_upsert.then_some(parsed)
                }
                None => None,
            };
            Ok(Request::BulkCreate(resource(&args[0])?, records, upsert))
        }
        "get" => {
            arity(&[2], "{get, Resource, PK}")?;
            Ok(Request::Get(resource(&args[0])?, pk(&args[1])?))
        }
        "update" => {
            arity(
                &[3, 4],
                "{update, Resource, PK, Changes} or {update, Resource, PK, Changes, Opts}",
            )?;
            let filter = match args.get(3) {
                Some(o) => filter_opts(o, "update")?,
                None => None,
            };
            Ok(Request::Update(
                resource(&args[0])?,
                pk(&args[1])?,
                record(&args[2], "changes")?,
                filter,
            ))
        }
        "destroy" => {
            arity(
                &[2, 3],
                "{destroy, Resource, PK} or {destroy, Resource, PK, Opts}",
            )?;
            let filter = match args.get(2) {
                Some(o) => filter_opts(o, "destroy")?,
                None => None,
            };
            Ok(Request::Destroy(resource(&args[0])?, pk(&args[1])?, filter))
        }
        "query" => {
            arity(&[2], "{query, Resource, Query}")?;
            Ok(Request::Query(
                resource(&args[0])?,
                Query::parse(&args[1]).map_err(RequestError::Bad)?,
            ))
        }
        "aggregate" => {
            arity(
                &[3, 4],
                "{aggregate, Resource, Query, [Aggregate]} or {aggregate, Resource, Query, [Aggregate], Opts}",
            )?;
            let mut group_by = None;
            if let Some(o) = args.get(3) {
                for (k, v) in opts(o, "aggregate")? {
                    match (k.as_atom().map(|a| a.as_str()), v) {
                        (Some("group_by"), _) if v.is_nil() => group_by = None,
                        (Some("group_by"), Value::Atom(f)) => group_by = Some(*f),
                        (Some("group_by"), other) => {
                            return bad(format!(
                                "group_by must be an atom naming a field, got: {other:?}"
                            ));
                        }
                        _ => {
                            return bad(format!(
                                "unknown aggregate option {k:?} (expected group_by)"
                            ));
                        }
                    }
                }
            }
            Ok(Request::Aggregate(
                resource(&args[0])?,
                Query::parse(&args[1]).map_err(RequestError::Bad)?,
                Aggregate::parse_list(&args[2]).map_err(RequestError::Bad)?,
                group_by,
            ))
        }
        "whereis" => {
            arity(&[2], "{whereis, Resource, PK}")?;
            Ok(Request::Whereis(resource(&args[0])?, pk(&args[1])?))
        }
        "keep_alive" => {
            arity(&[2], "{keep_alive, Resource, PK}")?;
            Ok(Request::KeepAlive(resource(&args[0])?, pk(&args[1])?))
        }
        "subscribe" => {
            arity(&[1], "{subscribe, [Resource]}")?;
            Ok(Request::Subscribe(Some(fields(
                &args[0],
                "the resources to subscribe to",
            )?)))
        }
        "info" => {
            arity(&[1], "{info, Resource}")?;
            Ok(Request::Info(resource(&args[0])?))
        }
        "clear" => {
            arity(&[1], "{clear, Resource}")?;
            Ok(Request::Clear(resource(&args[0])?))
        }
        "fault" => {
            arity(&[3], "{fault, Resource, PK, panic | error}")?;
            Ok(Request::Fault(
                resource(&args[0])?,
                pk(&args[1])?,
                fault(&args[2])?,
            ))
        }
        _ => Err(RequestError::Unknown),
    }
}

/// A request sent straight to a record's pid.
#[derive(Debug)]
pub enum DirectRequest {
    /// `get`.
    Get,
    /// `{update, Changes}` / `{update, Changes, Opts}`.
    Update(Record, Option<Expr>),
    /// `destroy`.
    Destroy,
    /// `keep_alive`.
    KeepAlive,
}

/// Parses a request sent to a record's pid.
pub fn parse_direct(v: &Value) -> Result<DirectRequest, RequestError> {
    match v {
        Value::Atom(a) => match a.as_str() {
            "get" => Ok(DirectRequest::Get),
            "destroy" => Ok(DirectRequest::Destroy),
            "keep_alive" => Ok(DirectRequest::KeepAlive),
            _ => Err(RequestError::Unknown),
        },
        Value::Tuple(items) if matches!(items.first(), Some(Value::Atom(a)) if a.as_str() == "update") => {
            match &items[1..] {
                [changes] => Ok(DirectRequest::Update(record(changes, "changes")?, None)),
                [changes, o] => Ok(DirectRequest::Update(
                    record(changes, "changes")?,
                    filter_opts(o, "update")?,
                )),
                _ => bad("update must be {update, Changes} or {update, Changes, Opts}"),
            }
        }
        _ => Err(RequestError::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(s: &str) -> Value {
        crate::term::parse_term(s).unwrap()
    }

    #[test]
    fn parses_every_documented_form() {
        let cases = [
            "{define, r, #{primary_key => [id], inactivity_timeout => 100, maximum_lifetime => infinity, identities => [{by_email, [email]}], max_restarts => 2, max_seconds => 1, expiry_grace => 50}}",
            "{create, r, #{id => 1}}",
            "{upsert, r, #{id => 1}, #{keys => [id], set => #{n => 2}, condition => {eq, n, 1}}}",
            "{bulk_create, r, [#{id => 1}, #{id => 2}], #{}}",
            "{bulk_create, r, [#{id => 1}], #{upsert => true, fields => [n]}}",
            "{get, r, #{id => 1}}",
            "{update, r, #{id => 1}, #{n => 2}}",
            "{update, r, #{id => 1}, #{n => 2}, #{filter => {eq, n, 1}}}",
            "{destroy, r, #{id => 1}}",
            "{destroy, r, #{id => 1}, #{filter => nil}}",
            "{query, r, #{filter => {gt, n, 1}, sort => [{n, desc}], offset => 1, limit => 2}}",
            "{aggregate, r, #{}, [{c, count, nil, #{}}]}",
            "{aggregate, r, #{}, [{c, count, nil, #{}}], #{group_by => author_id}}",
            "{whereis, r, #{id => 1}}",
            "{keep_alive, r, #{id => 1}}",
            "{info, r}",
            "{clear, r}",
            "{fault, r, #{id => 1}, panic}",
            "subscribe",
            "{subscribe, [user, post]}",
            "unsubscribe",
            "resources",
            "ping",
            "stats",
        ];
        for case in cases {
            assert!(
                parse(&term(case)).is_ok(),
                "{case} should parse: {:?}",
                parse(&term(case))
            );
        }
        match parse(&term(
            "{bulk_create, r, [#{id => 1}], #{upsert => true, fields => [n]}}",
        )) {
            Ok(Request::BulkCreate(_, records, Some(opts))) => {
                assert_eq!(records.len(), 1);
                assert_eq!(opts.fields.unwrap().len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let err = |s: &str| match parse(&term(s)) {
            Err(RequestError::Bad(m)) => m,
            other => panic!("{s}: expected a bad request, got {other:?}"),
        };
        assert!(err("{get, r}").contains("{get, Resource, PK}"));
        assert!(err("{get, <<\"r\">>, #{id => 1}}").contains("resource must be an atom"));
        assert!(err("{get, r, 1}").contains("primary key must be a map"));
        assert!(err("{create, r, #{<<\"id\">> => 1}}").contains("keys must be atoms"));
        assert!(err("{define, r, #{}}").contains("primary_key"));
        assert!(
            err("{define, r, #{primary_key => [id], bogus => 1}}")
                .contains("unknown define option")
        );
        assert!(
            err("{define, r, #{primary_key => [id], inactivity_timeout => -1}}")
                .contains("milliseconds")
        );
        assert!(err("{query, r, #{filter => {foo, a, 1}}}").contains("foo"));
        assert!(err("{fault, r, #{id => 1}, boom}").contains("panic or error"));
        assert_eq!(
            parse(&term("{frobnicate, r}")).unwrap_err(),
            RequestError::Unknown
        );
        assert_eq!(parse(&term("hello")).unwrap_err(), RequestError::Unknown);
        assert_eq!(parse(&term("42")).unwrap_err(), RequestError::Unknown);
    }

    #[test]
    fn parses_direct_requests() {
        assert!(matches!(parse_direct(&term("get")), Ok(DirectRequest::Get)));
        assert!(matches!(
            parse_direct(&term("{update, #{n => 1}}")),
            Ok(DirectRequest::Update(_, None))
        ));
        assert!(matches!(
            parse_direct(&term("{update, #{n => 1}, #{filter => {eq, n, 0}}}")),
            Ok(DirectRequest::Update(_, Some(_)))
        ));
        assert!(matches!(
            parse_direct(&term("destroy")),
            Ok(DirectRequest::Destroy)
        ));
        assert_eq!(
            parse_direct(&term("nope")).unwrap_err(),
            RequestError::Unknown
        );
    }
}
