//! Requests to `ash_gen_server` (docs/PROTOCOL.md): which request a term is, parsed by the
//! request's own module in [`super::cmd`], and served by it.
//!
//! Parsing never looks at the store: a request that parses can still name an unknown resource
//! or a missing record.

use super::cmd::{
    aggregate::Aggregate, bulk_create::BulkCreate, clear::Clear, create::Create, define::Define,
    destroy::Destroy, destroy_where::DestroyWhere, fault::Fault, get::Get, info::Info,
    keep_alive::KeepAlive, ping, query::Query, resources, stats, subscribe, subscribe::Subscribe,
    update::Update, update_where::UpdateWhere, upsert::Upsert, whereis::Whereis,
};
use super::error::{Error, Result};
use super::service::Service;
use crate::protocol::caller::Caller;
use crate::term::Value;

/// A request to `ash_gen_server`.
#[derive(Debug)]
pub enum Request {
    /// `{define, Resource, Opts}`.
    Define(Define),
    /// `{create, Resource, Record}`.
    Create(Create),
    /// `{upsert, Resource, Record, Opts}`.
    Upsert(Upsert),
    /// `{bulk_create, Resource, [Record], Opts}`.
    BulkCreate(BulkCreate),
    /// `{get, Resource, PK}`.
    Get(Get),
    /// `{update, Resource, PK, Changes[, Opts]}`.
    Update(Update),
    /// `{destroy, Resource, PK[, Opts]}`.
    Destroy(Destroy),
    /// `{update_where, Resource, Query, Opts}`.
    UpdateWhere(UpdateWhere),
    /// `{destroy_where, Resource, Query[, Opts]}`.
    DestroyWhere(DestroyWhere),
    /// `{query, Resource, Query[, Opts]}`.
    Query(Query),
    /// `{aggregate, Resource, Query, [Aggregate][, Opts]}`.
    Aggregate(Aggregate),
    /// `{whereis, Resource, PK}`.
    Whereis(Whereis),
    /// `{keep_alive, Resource, PK}`.
    KeepAlive(KeepAlive),
    /// `subscribe` or `{subscribe, [Resource]}`.
    Subscribe(Subscribe),
    /// `unsubscribe`.
    Unsubscribe,
    /// `{info, Resource}`.
    Info(Info),
    /// `resources`.
    Resources,
    /// `{clear, Resource}`.
    Clear(Clear),
    /// `ping`.
    Ping,
    /// `cluster`.
    Cluster,
    /// `stats`.
    Stats,
    /// `{fault, Resource, PK, panic | error}`.
    Fault(Fault),
}

/// The tag of a request sent with the client's request id: `{request_id, Id, Request}`.
pub const REQUEST_ID_TAG: &str = "request_id";

/// Splits `{request_id, Id, Request}` into `Id` and `Request` (docs/PROTOCOL.md "Request
/// ids"): a client that may send a write twice (again to another member after a `nodedown`)
/// names it with an id of its own, an integer from 0 to 2^63 − 1 unique to the request, and a
/// cluster applies it at most once per id. A single node serves `Request` as it is. Any other
/// term is a request without an id: `(None, v)`.
pub fn split_request_id(v: &Value) -> Result<(Option<u64>, &Value)> {
    match v.as_tuple() {
        Some([Value::Atom(tag), id, request]) if tag.as_str() == REQUEST_ID_TAG => match id {
            Value::Int(n) if *n >= 0 => Ok((Some(*n as u64), request)),
            _ => super::error::bad(format!(
                "a request id is an integer from 0 to 2^63 - 1, got: {id:?}"
            )),
        },
        _ => Ok((None, v)),
    }
}

impl Request {
    /// Parses a request term, with the default limit on records per request.
    pub fn parse(v: &Value) -> Result<Request> {
        Request::parse_with(v, crate::wire::Limits::DEFAULT_MAX_RECORDS_PER_REQUEST)
    }

    /// Parses a request term carrying at most `max_records` records (checked before they are
    /// built; more is `{bad_request, ...}`).
    pub fn parse_with(v: &Value, max_records: usize) -> Result<Request> {
        let unknown = || Error::UnknownRequest(v.clone());
        if let Value::Atom(a) = v {
            return match a.as_str() {
                "subscribe" => Ok(Request::Subscribe(Subscribe(None))),
                "unsubscribe" => Ok(Request::Unsubscribe),
                "resources" => Ok(Request::Resources),
                "ping" => Ok(Request::Ping),
                "cluster" => Ok(Request::Cluster),
                "stats" => Ok(Request::Stats),
                _ => Err(unknown()),
            };
        }
        let Some([Value::Atom(tag), args @ ..]) = v.as_tuple() else {
            return Err(unknown());
        };
        Ok(match tag.as_str() {
            "define" => Request::Define(Define::parse(args)?),
            "create" => Request::Create(Create::parse(args)?),
            "upsert" => Request::Upsert(Upsert::parse(args)?),
            "bulk_create" => Request::BulkCreate(BulkCreate::parse(args, max_records)?),
            "get" => Request::Get(Get::parse(args)?),
            "update" => Request::Update(Update::parse(args)?),
            "destroy" => Request::Destroy(Destroy::parse(args)?),
            "update_where" => Request::UpdateWhere(UpdateWhere::parse(args)?),
            "destroy_where" => Request::DestroyWhere(DestroyWhere::parse(args)?),
            "query" => Request::Query(Query::parse(args)?),
            "aggregate" => Request::Aggregate(Aggregate::parse(args)?),
            "whereis" => Request::Whereis(Whereis::parse(args)?),
            "keep_alive" => Request::KeepAlive(KeepAlive::parse(args)?),
            "subscribe" => Request::Subscribe(Subscribe::parse(args)?),
            "info" => Request::Info(Info::parse(args)?),
            "clear" => Request::Clear(Clear::parse(args)?),
            "fault" => Request::Fault(Fault::parse(args)?),
            _ => return Err(unknown()),
        })
    }

    /// The request's name, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Define(_) => "define",
            Request::Create(_) => "create",
            Request::Upsert(_) => "upsert",
            Request::BulkCreate(_) => "bulk_create",
            Request::Get(_) => "get",
            Request::Update(_) => "update",
            Request::Destroy(_) => "destroy",
            Request::UpdateWhere(_) => "update_where",
            Request::DestroyWhere(_) => "destroy_where",
            Request::Query(_) => "query",
            Request::Aggregate(_) => "aggregate",
            Request::Whereis(_) => "whereis",
            Request::KeepAlive(_) => "keep_alive",
            Request::Subscribe(_) => "subscribe",
            Request::Unsubscribe => "unsubscribe",
            Request::Info(_) => "info",
            Request::Resources => "resources",
            Request::Clear(_) => "clear",
            Request::Ping => "ping",
            Request::Cluster => "cluster",
            Request::Stats => "stats",
            Request::Fault(_) => "fault",
        }
    }

    /// Serves the request as a call: exactly one reply reaches `from`.
    pub fn execute(self, svc: &Service, from: Caller) {
        match self {
            Request::Define(r) => r.execute(svc, from),
            Request::Create(r) => r.execute(svc, from),
            Request::Upsert(r) => r.execute(svc, from),
            Request::BulkCreate(r) => r.execute(svc, from),
            Request::Get(r) => r.execute(svc, from),
            Request::Update(r) => r.execute(svc, from),
            Request::Destroy(r) => r.execute(svc, from),
            Request::UpdateWhere(r) => r.execute(svc, from),
            Request::DestroyWhere(r) => r.execute(svc, from),
            Request::Query(r) => r.execute(svc, from),
            Request::Aggregate(r) => r.execute(svc, from),
            Request::Whereis(r) => r.execute(svc, from),
            Request::KeepAlive(r) => r.execute(svc, from),
            Request::Subscribe(r) => r.execute(svc, from),
            Request::Unsubscribe => subscribe::unsubscribe(svc, from),
            Request::Info(r) => r.execute(svc, from),
            Request::Resources => resources::execute(svc, from),
            Request::Clear(r) => r.execute(svc, from),
            Request::Ping => ping::execute(svc, from),
            Request::Cluster => super::cmd::cluster::execute(svc, from),
            Request::Stats => stats::execute(svc, from),
            Request::Fault(r) => r.execute(svc, from),
        }
    }

    /// Serves the request as a cast: only `keep_alive` makes sense without a reply.
    pub fn cast(self, svc: &Service) {
        match self {
            Request::KeepAlive(r) => r.cast(svc),
            other => {
                tracing::warn!(
                    kind = other.kind(),
                    "ignored a cast that only makes sense as a call"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(s: &str) -> Value {
        crate::term::parse_term(s).unwrap()
    }

    #[test]
    fn request_ids_are_split_off_and_checked() {
        let wrapped = term("{request_id, 42, {get, r, #{id => 1}}}");
        let (id, request) = split_request_id(&wrapped).unwrap();
        assert_eq!(id, Some(42));
        assert_eq!(*request, term("{get, r, #{id => 1}}"));
        assert!(matches!(Request::parse(request), Ok(Request::Get(_))));

        let plain = term("{get, r, #{id => 1}}");
        let (id, request) = split_request_id(&plain).unwrap();
        assert_eq!((id, request), (None, &plain));

        for bad in [
            "{request_id, -1, ping}",
            "{request_id, <<\"x\">>, ping}",
            "{request_id, 1.5, ping}",
            "{request_id, 18446744073709551615, ping}",
        ] {
            match split_request_id(&term(bad)) {
                Err(Error::BadRequest(message)) => {
                    assert!(message.contains("request id"), "{bad}: {message}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // An id wraps one request: a second wrapper is an unknown request.
        let nested = term("{request_id, 1, {request_id, 2, ping}}");
        let (_, inner) = split_request_id(&nested).unwrap();
        assert!(matches!(
            Request::parse(inner),
            Err(Error::UnknownRequest(_))
        ));
    }

    #[test]
    fn parses_every_documented_form() {
        let cases = [
            "{define, r, #{primary_key => [id], inactivity_timeout => 100, maximum_lifetime => infinity, identities => [{by_email, [email]}], max_restarts => 2, max_seconds => 1, expiry_grace => 50}}",
            "{create, r, #{id => 1}}",
            "{upsert, r, #{id => 1}, #{keys => [id], set => #{n => 2}, condition => {eq, n, 1}}}",
            "{bulk_create, r, [#{id => 1}, #{id => 2}], #{}}",
            "{bulk_create, r, [#{id => 1}], #{upsert => true, fields => [n]}}",
            "{bulk_create, r, [#{id => 1}], #{all_or_nothing => true}}",
            "{get, r, #{id => 1}}",
            "{update, r, #{id => 1}, #{n => 2}}",
            "{update, r, #{id => 1}, #{n => 2}, #{filter => {eq, n, 1}}}",
            "{update, r, #{id => 1}, #{n => 2}, #{filter => nil}}",
            "{destroy, r, #{id => 1}}",
            "{destroy, r, #{id => 1}, #{filter => nil}}",
            "{update_where, r, #{filter => {gt, n, 1}}, #{set => #{m => 1}, atomics => [{n, {ref, m}}], return => count}}",
            "{destroy_where, r, #{limit => 3}}",
            "{destroy_where, r, #{}, #{return => records}}",
            "{query, r, #{filter => {gt, n, 1}, sort => [{n, desc}], offset => 1, limit => 2, select => [n]}}",
            "{query, r, #{limit => 2}, #{partition_by => author, partitions => [{1, [a]}, {2, [b, c]}]}}",
            "{query, r, #{}, #{partition_by => author}}",
            "{query, r, #{}, #{}}",
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
                Request::parse(&term(case)).is_ok(),
                "{case} should parse: {:?}",
                Request::parse(&term(case))
            );
        }
        match Request::parse(&term(
            "{bulk_create, r, [#{id => 1}], #{upsert => true, fields => [n]}}",
        )) {
            Ok(Request::BulkCreate(BulkCreate {
                records,
                upsert: Some(opts),
                ..
            })) => {
                assert_eq!(records.len(), 1);
                assert_eq!(opts.fields.unwrap().len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let err = |s: &str| match Request::parse(&term(s)) {
            Err(Error::BadRequest(m)) => m,
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
        assert!(err("{query, r, #{}, x}").contains("query options must be a map"));
        assert!(err("{query, r, #{}, #{partitions => []}}").contains("needs partition_by"));
        assert!(err("{query, r, #{}, #{}, x}").contains("{query, Resource, Query, Opts}"));
        assert!(err("{fault, r, #{id => 1}, boom}").contains("panic or error"));
        assert!(
            err("{bulk_create, r, [#{id => 1}], #{upsert => true, all_or_nothing => true}}")
                .contains("all_or_nothing applies to plain creates")
        );
        for unknown in ["{frobnicate, r}", "hello", "42"] {
            assert_eq!(
                Request::parse(&term(unknown)).unwrap_err(),
                Error::UnknownRequest(term(unknown))
            );
        }
    }
}
