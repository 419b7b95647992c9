//! The node as a library: start one inside a Rust program and work with records through a typed
//! API, without building request terms by hand.
//!
//! [`Embedded`] runs a [`Node`] (with or without sockets) and its `ash_gen_server` process, and
//! talks to it as a local process would: every method is one request of docs/PROTOCOL.md,
//! served exactly as for a BEAM caller. Records are [`Fields`]; queries are built with
//! [`Query`] and [`Filter`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), ash_gen_server::embedded::ApiError> {
//! use ash_gen_server::embedded::{Definition, Embedded, Fields, Filter, Query};
//! let db = Embedded::local("app@127.0.0.1")?;
//! db.define("user", Definition::new(["id"]).inactivity_timeout(60_000)).await?;
//! db.create("user", Fields::new().with("id", 1).with("name", "ann").with("age", 40)).await?;
//! let adults = db
//!     .query("user", Query::new().filter(Filter::gte("age", 18)).sort_desc("age"))
//!     .await?;
//! # Ok(()) }
//! ```

use crate::node::mailbox::CallError as MailboxError;
use crate::node::{Mailbox, Node, NodeConfig, RunningNode, StartError};
use crate::protocol::{Options, RunningServer, SERVER_NAME, Server};
use crate::term::{Atom, AtomTableFull, Record, Value, atoms};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Why a call through the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The node answered `{error, Reason}` (the reason term is attached).
    #[error("the node refused: {0:?}")]
    Refused(Value),
    /// The call did not complete.
    #[error(transparent)]
    Call(#[from] MailboxError),
    /// The node could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A name is not valid (node name, or too many atoms).
    #[error("bad name: {0}")]
    Name(String),
    /// The node answered something this API does not expect.
    #[error("unexpected reply {0:?}")]
    Unexpected(Value),
}

impl From<AtomTableFull> for ApiError {
    fn from(e: AtomTableFull) -> Self {
        ApiError::Name(e.to_string())
    }
}

fn atom(name: &str) -> Result<Value, ApiError> {
    Ok(Value::Atom(Atom::new(name)?))
}

/// A record, or a primary key, or changes: field names and their values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fields(pub BTreeMap<String, Value>);

impl Fields {
    /// No fields.
    pub fn new() -> Fields {
        Fields::default()
    }

    /// With `field` set to `value`.
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Fields {
        self.0.insert(field.to_string(), value.into());
        self
    }

    /// The value of `field`.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }

    fn to_term(&self) -> Result<Value, ApiError> {
        let entries = self
            .0
            .iter()
            .map(|(k, v)| Ok((atom(k)?, v.clone())))
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(Value::map(entries))
    }

    fn from_term(v: &Value) -> Result<Fields, ApiError> {
        let record = Record::from_map(v).map_err(|_| ApiError::Unexpected(v.clone()))?;
        Ok(Fields(
            record
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                .collect(),
        ))
    }
}

/// What `define` takes: the primary key and the resource's options.
#[derive(Clone, Debug)]
pub struct Definition {
    primary_key: Vec<String>,
    options: Vec<(&'static str, Value)>,
    identities: Vec<(String, Vec<String>)>,
}

impl Definition {
    /// A resource whose primary key is `fields`.
    pub fn new<const N: usize>(fields: [&str; N]) -> Definition {
        Definition {
            primary_key: fields.iter().map(|f| f.to_string()).collect(),
            options: Vec::new(),
            identities: Vec::new(),
        }
    }

    /// Records expire after this many milliseconds untouched.
    pub fn inactivity_timeout(mut self, ms: u64) -> Definition {
        self.options
            .push(("inactivity_timeout", Value::Int(ms as i64)));
        self
    }

    /// Records expire this many milliseconds after creation.
    pub fn maximum_lifetime(mut self, ms: u64) -> Definition {
        self.options
            .push(("maximum_lifetime", Value::Int(ms as i64)));
        self
    }

    /// A unique identity over `fields`.
    pub fn identity<const N: usize>(mut self, name: &str, fields: [&str; N]) -> Definition {
        self.identities.push((
            name.to_string(),
            fields.iter().map(|f| f.to_string()).collect(),
        ));
        self
    }

    fn to_term(&self) -> Result<Value, ApiError> {
        let atoms = |names: &[String]| -> Result<Value, ApiError> {
            Ok(Value::list(
                names.iter().map(|n| atom(n)).collect::<Result<_, _>>()?,
            ))
        };
        let mut entries = vec![(atom("primary_key")?, atoms(&self.primary_key)?)];
        for (k, v) in &self.options {
            entries.push((atom(k)?, v.clone()));
        }
        let identities = self
            .identities
            .iter()
            .map(|(name, fields)| Ok(Value::pair(atom(name)?, atoms(fields)?)))
            .collect::<Result<Vec<_>, ApiError>>()?;
        entries.push((atom("identities")?, Value::list(identities)));
        Ok(Value::map(entries))
    }
}

/// A filter (docs/PROTOCOL.md, "Filter expressions").
#[derive(Clone, Debug)]
pub enum Filter {
    /// `{Op, Field, Value}`.
    Compare(&'static str, String, Value),
    /// `{in, Field, [Value]}`.
    In(String, Vec<Value>),
    /// `{is_nil, Field}`.
    IsNil(String),
    /// `{'and', A, B}`.
    And(Box<Filter>, Box<Filter>),
    /// `{'or', A, B}`.
    Or(Box<Filter>, Box<Filter>),
    /// `{'not', A}`.
    Not(Box<Filter>),
}

macro_rules! comparisons {
    ($($name:ident => $op:literal),*) => {
        $(
            #[doc = concat!("`{", $op, ", Field, Value}`.")]
            pub fn $name(field: &str, value: impl Into<Value>) -> Filter {
                Filter::Compare($op, field.to_string(), value.into())
            }
        )*
    };
}

impl Filter {
    comparisons!(eq => "eq", neq => "neq", lt => "lt", lte => "lte", gt => "gt", gte => "gte");

    /// Both hold.
    pub fn and(self, other: Filter) -> Filter {
        Filter::And(Box::new(self), Box::new(other))
    }

    /// Either holds.
    pub fn or(self, other: Filter) -> Filter {
        Filter::Or(Box::new(self), Box::new(other))
    }

    /// Does not hold.
    pub fn negate(self) -> Filter {
        Filter::Not(Box::new(self))
    }

    fn to_term(&self) -> Result<Value, ApiError> {
        Ok(match self {
            Filter::Compare(op, field, value) => {
                Value::tuple(vec![atom(op)?, atom(field)?, value.clone()])
            }
            Filter::In(field, values) => {
                Value::tuple(vec![atom("in")?, atom(field)?, Value::list(values.clone())])
            }
            Filter::IsNil(field) => Value::pair(atom("is_nil")?, atom(field)?),
            Filter::And(a, b) => Value::tuple(vec![atom("and")?, a.to_term()?, b.to_term()?]),
            Filter::Or(a, b) => Value::tuple(vec![atom("or")?, a.to_term()?, b.to_term()?]),
            Filter::Not(a) => Value::pair(atom("not")?, a.to_term()?),
        })
    }
}

/// A query: filter, sort, offset, limit.
#[derive(Clone, Debug, Default)]
pub struct Query {
    filter: Option<Filter>,
    sort: Vec<(String, &'static str)>,
    offset: Option<u64>,
    limit: Option<u64>,
}

impl Query {
    /// Every record, in no particular order.
    pub fn new() -> Query {
        Query::default()
    }

    /// Only records matching `filter`.
    pub fn filter(mut self, filter: Filter) -> Query {
        self.filter = Some(filter);
        self
    }

    /// Then by `field`, ascending.
    pub fn sort_asc(mut self, field: &str) -> Query {
        self.sort.push((field.to_string(), "asc"));
        self
    }

    /// Then by `field`, descending.
    pub fn sort_desc(mut self, field: &str) -> Query {
        self.sort.push((field.to_string(), "desc"));
        self
    }

    /// Skip the first `n`.
    pub fn offset(mut self, n: u64) -> Query {
        self.offset = Some(n);
        self
    }

    /// At most `n`.
    pub fn limit(mut self, n: u64) -> Query {
        self.limit = Some(n);
        self
    }

    fn to_term(&self) -> Result<Value, ApiError> {
        let mut entries = Vec::new();
        if let Some(f) = &self.filter {
            entries.push((atom("filter")?, f.to_term()?));
        }
        if !self.sort.is_empty() {
            let sort = self
                .sort
                .iter()
                .map(|(f, d)| Ok(Value::pair(atom(f)?, atom(d)?)))
                .collect::<Result<Vec<_>, ApiError>>()?;
            entries.push((atom("sort")?, Value::list(sort)));
        }
        if let Some(n) = self.offset {
            entries.push((atom("offset")?, Value::Int(n as i64)));
        }
        if let Some(n) = self.limit {
            entries.push((atom("limit")?, Value::Int(n as i64)));
        }
        Ok(Value::map(entries))
    }
}

/// A node running in this process, with its record service.
pub struct Embedded {
    node: Arc<Node>,
    server: RunningServer,
    mailbox: Mailbox,
    running: Option<RunningNode>,
    /// How long a call may take.
    pub timeout: Duration,
}

impl Embedded {
    /// A node without sockets, named `name` (`name@host`): only this program can use it. Needs
    /// a tokio runtime.
    pub fn local(name: &str) -> Result<Embedded, ApiError> {
        let name = name
            .parse()
            .map_err(|e| ApiError::Name(format!("{name}: {e}")))?;
        let node = Node::new(NodeConfig::new(name, String::new()), 1)?;
        Ok(Embedded::serve(node, None))
    }

    /// A node that also joins the Erlang distribution (listens, registers with EPMD), so BEAM
    /// nodes can use the same records.
    pub async fn start(config: NodeConfig) -> Result<Embedded, ApiError> {
        let running = Node::start(config).await?;
        Ok(Embedded::serve(running.node.clone(), Some(running)))
    }

    fn serve(node: Arc<Node>, running: Option<RunningNode>) -> Embedded {
        let server =
            Server::start(&node, Options::default()).expect("a new node has no ash_gen_server");
        Embedded {
            mailbox: Mailbox::new(&node),
            node,
            server,
            running,
            timeout: Duration::from_secs(5),
        }
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stops the node.
    pub async fn stop(self) {
        self.server.stop();
        if let Some(running) = self.running {
            running.shutdown(std::time::Duration::from_secs(5)).await;
        }
    }

    /// Sends any request term of docs/PROTOCOL.md to the node's `ash_gen_server` and returns
    /// its reply as it is (`{error, Reason}` included).
    pub async fn call(&self, request: Value) -> Result<Value, ApiError> {
        Ok(self
            .mailbox
            .call(SERVER_NAME, request, self.timeout)
            .await?)
    }

    async fn request(&self, items: Vec<Value>) -> Result<Value, ApiError> {
        let request = Value::tuple(items);
        let reply = self
            .mailbox
            .call(SERVER_NAME, request, self.timeout)
            .await?;
        match reply.as_tuple() {
            Some([Value::Atom(tag), reason]) if *tag == *atoms::ERROR => {
                Err(ApiError::Refused(reason.clone()))
            }
            _ => Ok(reply),
        }
    }

    fn ok_body(reply: Value) -> Result<Value, ApiError> {
        match reply {
            Value::Tuple(items) if items.len() == 2 && items[0] == Value::Atom(*atoms::OK) => {
                Ok(items.into_vec().pop().expect("two elements"))
            }
            other => Err(ApiError::Unexpected(other)),
        }
    }

    /// `{define, Resource, Opts}`.
    pub async fn define(&self, resource: &str, definition: Definition) -> Result<(), ApiError> {
        self.request(vec![
            atom("define")?,
            atom(resource)?,
            definition.to_term()?,
        ])
        .await?;
        Ok(())
    }

    /// `{create, Resource, Record}`: the stored record.
    pub async fn create(&self, resource: &str, record: Fields) -> Result<Fields, ApiError> {
        let reply = self
            .request(vec![atom("create")?, atom(resource)?, record.to_term()?])
            .await?;
        Fields::from_term(&Self::ok_body(reply)?)
    }

    /// `{get, Resource, PK}`: `None` when there is no such record.
    pub async fn get(&self, resource: &str, pk: Fields) -> Result<Option<Fields>, ApiError> {
        match self
            .request(vec![atom("get")?, atom(resource)?, pk.to_term()?])
            .await
        {
            Ok(reply) => Ok(Some(Fields::from_term(&Self::ok_body(reply)?)?)),
            Err(ApiError::Refused(reason)) if reason == atom("not_found")? => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `{update, Resource, PK, Changes}`: the updated record.
    pub async fn update(
        &self,
        resource: &str,
        pk: Fields,
        changes: Fields,
    ) -> Result<Fields, ApiError> {
        let reply = self
            .request(vec![
                atom("update")?,
                atom(resource)?,
                pk.to_term()?,
                changes.to_term()?,
            ])
            .await?;
        Fields::from_term(&Self::ok_body(reply)?)
    }

    /// `{destroy, Resource, PK}`: whether there was such a record.
    pub async fn destroy(&self, resource: &str, pk: Fields) -> Result<bool, ApiError> {
        match self
            .request(vec![atom("destroy")?, atom(resource)?, pk.to_term()?])
            .await
        {
            Ok(_) => Ok(true),
            Err(ApiError::Refused(reason)) if reason == atom("not_found")? => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `{query, Resource, Query}`: the matching records.
    pub async fn query(&self, resource: &str, query: Query) -> Result<Vec<Fields>, ApiError> {
        let reply = self
            .request(vec![atom("query")?, atom(resource)?, query.to_term()?])
            .await?;
        let body = Self::ok_body(reply)?;
        body.as_list()
            .ok_or_else(|| ApiError::Unexpected(body.clone()))?
            .iter()
            .map(Fields::from_term)
            .collect()
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::boolean(b)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::binary_owned(s.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_program_uses_records_through_the_typed_api() {
        let db = Embedded::local("embedded_test@127.0.0.1").unwrap();
        db.define("user", Definition::new(["id"]).identity("email", ["email"]))
            .await
            .unwrap();
        for (id, name, age) in [(1, "ann", 40), (2, "bob", 17), (3, "cy", 61)] {
            let created = db
                .create(
                    "user",
                    Fields::new()
                        .with("id", id)
                        .with("name", name)
                        .with("age", age)
                        .with("email", format!("{name}@x")),
                )
                .await
                .unwrap();
            assert_eq!(created.get("name"), Some(&Value::from(name)));
        }
        let dup = db
            .create("user", Fields::new().with("id", 9).with("email", "ann@x"))
            .await;
        assert!(matches!(dup, Err(ApiError::Refused(_))), "{dup:?}");
        let adults = db
            .query(
                "user",
                Query::new().filter(Filter::gte("age", 18)).sort_desc("age"),
            )
            .await
            .unwrap();
        let names: Vec<_> = adults.iter().map(|r| r.get("name").cloned()).collect();
        assert_eq!(
            names,
            vec![Some(Value::from("cy")), Some(Value::from("ann"))]
        );
        let updated = db
            .update(
                "user",
                Fields::new().with("id", 2),
                Fields::new().with("age", 18),
            )
            .await
            .unwrap();
        assert_eq!(updated.get("age"), Some(&Value::Int(18)));
        assert!(
            db.destroy("user", Fields::new().with("id", 1))
                .await
                .unwrap()
        );
        assert!(
            !db.destroy("user", Fields::new().with("id", 1))
                .await
                .unwrap()
        );
        assert_eq!(
            db.get("user", Fields::new().with("id", 1)).await.unwrap(),
            None
        );
        assert!(matches!(
            db.get("nobody", Fields::new().with("id", 1)).await,
            Err(ApiError::Refused(_))
        ));
        db.stop().await;
    }
}
