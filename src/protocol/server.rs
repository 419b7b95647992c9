//! The `ash_gen_server` process: serves every request of docs/PROTOCOL.md.
//!
//! A message arrives from the node ([`Process::deliver`]), is sorted into call or cast, parsed by
//! [`super::request`], and served by the request's module: record operations go to the record's
//! actor, which replies when its turn is done; creates, queries and aggregates are served on the
//! spot. The server owns the record service, and its monitors on expiry handlers report here.

use super::caller::Caller;
use super::reply;
use super::request::{Request, split_request_id};
use super::service::{Options, Service};
use crate::node::genserver::{self, GenMessage};
use crate::node::{Node, Process};
use crate::record::RecordService;
use crate::term::{Pid, Ref, Value};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The name the server is registered under.
pub const SERVER_NAME: &str = "ash_gen_server";

/// The `ash_gen_server` process.
pub struct Server {
    service: Arc<Service>,
}

/// A started server: its pid, its state and its background tasks.
pub struct RunningServer {
    /// The server's pid.
    pub pid: Pid,
    /// What it serves with.
    pub service: Arc<Service>,
    tasks: Vec<JoinHandle<()>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another process has the name.
    #[error("the name {0} is already registered on this node")]
    AlreadyRegistered(&'static str),
    /// The data directory could not be used.
    #[error(transparent)]
    DataDir(#[from] super::durable::DataDirError),
}

impl Server {
    /// Registers the server under [`SERVER_NAME`] on `node`, with a new record service, and
    /// starts the service's timers. Needs a tokio runtime.
    pub fn start(node: &Arc<Node>, options: Options) -> Result<RunningServer, ServerError> {
        let data_dir = options.data_dir.clone();
        let fsync = options
            .fsync
            .unwrap_or(crate::storage::FsyncPolicy::Interval);
        let mut service = None;
        let name = options.register_as.unwrap_or(SERVER_NAME);
        let pid = node
            .register(name, |pid| {
                let svc = Arc::new(Service::new(RecordService::new(node.clone(), pid), options));
                service = Some(svc.clone());
                Arc::new(Server { service: svc })
            })
            .ok_or(ServerError::AlreadyRegistered(name))?;
        let service = service.expect("the server was made");
        let mut tasks = Vec::new();
        if let Some(dir) = &data_dir {
            let (journal, restored) = super::durable::open(&service, dir, fsync)?;
            tracing::info!(
                dir = %dir.display(),
                ?fsync,
                resources = restored.resources,
                records = restored.records,
                cut_bytes = restored.cut_bytes,
                "restored records from the data directory"
            );
            if fsync == crate::storage::FsyncPolicy::Interval {
                tasks.push(tokio::spawn(crate::storage::journal::flush_every_interval(
                    journal,
                )));
            }
        }
        tasks.extend(service.records.spawn_tasks());
        tracing::info!(%pid, instance = %service.instance, "{name} started");
        Ok(RunningServer {
            pid,
            service,
            tasks,
        })
    }
}

impl RunningServer {
    /// Stops the background tasks.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Process for Server {
    fn deliver(&self, _node: &Arc<Node>, _from: Option<Pid>, message: Value) {
        let svc = &self.service;
        match genserver::classify(message) {
            GenMessage::Call(from, request) => {
                let (born_wall, request) = match request.as_tuple() {
                    Some([Value::Atom(tag), Value::Int(at), inner])
                        if tag.as_str() == super::caller::AT_TAG =>
                    {
                        (Some(*at), inner.clone())
                    }
                    _ => (None, request),
                };
                match split_request_id(&request).and_then(|(_, request)| {
                    Request::parse_with(request, svc.node().config.limits.max_records_per_request)
                }) {
                    Ok(request) => {
                        let mut caller = Caller::new(from, request.kind());
                        caller.born_wall = born_wall;
                        request.execute(svc, caller)
                    }
                    Err(e) => svc.reply(&Caller::new(from, "invalid"), &e.to_reply()),
                }
            }
            GenMessage::Cast(request) => match Request::parse(&request) {
                Ok(request) => request.cast(svc),
                Err(e) => tracing::warn!(error = %e, "ignored a malformed cast"),
            },
            GenMessage::Info(message) => {
                tracing::debug!(?message, "the ignored message");
                tracing::warn!("{SERVER_NAME} ignored a message that is neither a call nor a cast");
            }
        }
    }

    fn over_limit(&self, node: &Arc<Node>, message: Value, reason: &'static str) {
        reply::refuse_over_limit(node, message, reason);
    }

    fn down(&self, _node: &Arc<Node>, reference: Ref, target: Pid, reason: Value) {
        self.service
            .records
            .expiry_handler_down(&target, &reference, &reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Mailbox, NodeConfig, Signal};
    use crate::term::parse_term;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    fn t(s: &str) -> Value {
        parse_term(s).unwrap()
    }

    /// A node without sockets, with the server registered and fault injection on.
    fn serve(name: &str) -> (Arc<Node>, RunningServer) {
        let config = NodeConfig::new(format!("{name}@127.0.0.1").parse().unwrap(), "c".into());
        let node = Node::new(config, 3).unwrap();
        let server = Server::start(
            &node,
            Options {
                fault_injection: true,
                ..Options::default()
            },
        )
        .unwrap();
        (node, server)
    }

    async fn call(mailbox: &Mailbox, request: &str) -> Value {
        mailbox.call(SERVER_NAME, t(request), WAIT).await.unwrap()
    }

    #[tokio::test]
    async fn serves_requests_without_sockets() {
        let (node, _server) = serve("unit_crud");
        assert!(Server::start(&node, Options::default()).is_err());
        let me = Mailbox::new(&node);
        assert_eq!(call(&me, "ping").await, t("pong"));
        assert_eq!(
            call(
                &me,
                "{define, user, #{primary_key => [id], identities => [{email, [email]}]}}"
            )
            .await,
            t("ok")
        );
        assert_eq!(
            call(
                &me,
                "{create, user, #{id => 1, email => <<\"a\">>, n => 1}}"
            )
            .await,
            t("{ok, #{id => 1, email => <<\"a\">>, n => 1}}")
        );
        assert_eq!(
            call(&me, "{create, user, #{id => 2, email => <<\"a\">>}}").await,
            t("{error, {identity_conflict, email, #{email => <<\"a\">>}}}")
        );
        assert_eq!(
            call(
                &me,
                "{update, user, #{id => 1}, #{n => 2}, #{filter => {eq, n, 5}}}"
            )
            .await,
            t("{error, stale}")
        );
        assert_eq!(
            call(
                &me,
                "{update, user, #{id => 1}, #{n => 2}, #{filter => {eq, n, 1}}}"
            )
            .await,
            t("{ok, #{id => 1, email => <<\"a\">>, n => 2}}")
        );
        assert_eq!(
            call(
                &me,
                "{upsert, user, #{id => 9, email => <<\"a\">>, n => 7}, #{keys => [email]}}"
            )
            .await,
            t("{ok, updated, #{id => 1, email => <<\"a\">>, n => 7}}")
        );
        assert_eq!(
            call(&me, "{bulk_create, user, [#{id => 3}, #{id => 1}], #{}}").await,
            t("{ok, [{ok, #{id => 3}}, {error, {already_exists, #{id => 1}}}]}")
        );
        // All or nothing: the second record's key is taken, so 4 is not created either (the
        // query below still finds 3 as the highest id).
        assert_eq!(
            call(
                &me,
                "{bulk_create, user, [#{id => 4}, #{id => 3}], #{all_or_nothing => true}}"
            )
            .await,
            t("{error, {record, 2, {already_exists, #{id => 3}}}}")
        );
        assert_eq!(
            call(
                &me,
                "{query, user, #{sort => [{id, desc}], limit => 1, select => [id]}}"
            )
            .await,
            t("{ok, [#{id => 3}]}")
        );
        assert_eq!(
            call(
                &me,
                "{aggregate, user, #{}, [{c, count, nil, #{}}, {s, sum, n, #{}}]}"
            )
            .await,
            t("{ok, #{c => 2, s => 7}}")
        );
        assert_eq!(call(&me, "{destroy, user, #{id => 3}}").await, t("ok"));
        assert_eq!(
            call(&me, "{get, user, #{id => 3}}").await,
            t("{error, not_found}")
        );
        assert_eq!(
            call(&me, "{get, nobody, #{id => 3}}").await,
            t("{error, {unknown_resource, nobody}}")
        );
        assert_eq!(
            call(&me, "{frob}").await,
            t("{error, {unknown_request, {frob}}}")
        );
        assert_eq!(call(&me, "resources").await, t("{ok, [user]}"));
        assert_eq!(call(&me, "{clear, user}").await, t("{ok, 1}"));
    }

    #[tokio::test]
    async fn a_record_pid_answers_calls_and_exits_when_destroyed() {
        let (node, server) = serve("unit_pid");
        let me = Mailbox::new(&node);
        call(&me, "{define, post, #{primary_key => [id]}}").await;
        call(&me, "{create, post, #{id => 1, n => 0}}").await;
        let Value::Tuple(reply) = call(&me, "{whereis, post, #{id => 1}}").await else {
            panic!("whereis")
        };
        let Value::Pid(pid) = &reply[1] else {
            panic!("not a pid")
        };
        let pid = **pid;
        assert_eq!(server.service.records.pids(), 1);
        let reference = me.monitor(&pid);
        assert_eq!(
            me.call_pid(&pid, t("{update, #{n => 1}}"), WAIT)
                .await
                .unwrap(),
            t("{ok, #{id => 1, n => 1}}")
        );
        assert_eq!(
            me.call_pid(&pid, t("bogus"), WAIT).await.unwrap(),
            t("{error, {unknown_request, bogus}}")
        );
        assert_eq!(
            me.call_pid(&pid, t("destroy"), WAIT).await.unwrap(),
            t("ok")
        );
        assert_eq!(
            me.recv(WAIT).await,
            Some(Signal::Down {
                reference,
                target: pid,
                reason: t("normal")
            })
        );
        assert_eq!(server.service.records.pids(), 0);
    }

    #[tokio::test]
    async fn a_failing_record_restarts_from_its_last_commit_then_is_given_up() {
        let (node, _server) = serve("unit_supervision");
        let me = Mailbox::new(&node);
        call(
            &me,
            "{define, job, #{primary_key => [id], max_restarts => 1, max_seconds => 60}}",
        )
        .await;
        call(&me, "{create, job, #{id => 1, n => 5}}").await;
        let Value::Tuple(reply) = call(&me, "{whereis, job, #{id => 1}}").await else {
            panic!("whereis")
        };
        let Value::Pid(first) = &reply[1] else {
            panic!("not a pid")
        };
        let first = **first;
        me.monitor(&first);
        assert_eq!(
            call(&me, "{fault, job, #{id => 1}, error}").await,
            t("{error, {record_crashed, {internal_error, <<\"fault injected by request\">>}}}")
        );
        // The old pid exited with the failure; the record lives on with its committed state.
        assert!(matches!(
            me.recv(WAIT).await,
            Some(Signal::Down { target, reason, .. })
                if target == first && reason == t("{internal_error, <<\"fault injected by request\">>}")
        ));
        assert_eq!(
            call(&me, "{get, job, #{id => 1}}").await,
            t("{ok, #{id => 1, n => 5}}")
        );
        // Past the restart intensity the record is removed.
        call(&me, "{fault, job, #{id => 1}, error}").await;
        assert_eq!(
            call(&me, "{get, job, #{id => 1}}").await,
            t("{error, not_found}")
        );
    }

    #[tokio::test]
    async fn expired_records_go_to_a_handler_and_are_removed_when_it_dies() {
        let (node, _server) = serve("unit_expiry");
        let handler = Mailbox::new(&node);
        let me = Mailbox::new(&node);
        call(
            &me,
            "{define, session, #{primary_key => [id], inactivity_timeout => 30, expiry_grace => 60000}}",
        )
        .await;
        assert_eq!(call(&handler, "{subscribe, [session]}").await, t("ok"));
        call(&me, "{create, session, #{id => 1}}").await;
        let notice = handler
            .recv_matching(WAIT, |s| matches!(s, Signal::Message(_)))
            .await;
        let Some(Signal::Message(Value::Tuple(notice))) = notice else {
            panic!("no expiry notice: {notice:?}")
        };
        assert_eq!(notice[1], t("expired"));
        assert_eq!(
            notice[2],
            t(
                "#{node => 'unit_expiry@127.0.0.1', resource => session, tenant => nil, \
                 primary_key => #{id => 1}, record => #{id => 1}, reason => inactivity_timeout}"
            )
        );
        // The handler has the grace period to destroy the record; it dies instead.
        assert_eq!(
            call(&me, "{get, session, #{id => 1}}").await,
            t("{ok, #{id => 1}}")
        );
        drop(handler);
        let mut left = t("{ok, #{id => 1}}");
        for _ in 0..500 {
            left = call(&me, "{get, session, #{id => 1}}").await;
            if left == t("{error, not_found}") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(left, t("{error, not_found}"));
        let Value::Tuple(stats) = call(&me, "stats").await else {
            panic!("stats")
        };
        let Value::Map(stats) = &stats[1] else {
            panic!("stats map")
        };
        assert!(stats.contains(&(t("expiry_handlers"), Value::Int(0))));
    }

    #[tokio::test]
    async fn a_query_with_touch_false_leaves_inactivity_timers_alone() {
        let (node, _server) = serve("unit_touch");
        let handler = Mailbox::new(&node);
        let me = Mailbox::new(&node);
        call(
            &me,
            "{define, s, #{primary_key => [id], inactivity_timeout => 1000, expiry_grace => 60000}}",
        )
        .await;
        assert_eq!(call(&handler, "{subscribe, [s]}").await, t("ok"));
        call(&me, "{create, s, #{id => 1}}").await;
        call(&me, "{create, s, #{id => 2}}").await;
        assert_eq!(
            call(&me, "{query, s, #{}, #{touch => 1}}").await,
            t("{error, {bad_request, <<\"touch must be true or false, got: 1\">>}}")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Both return their record; only the first resets its timer.
        assert_eq!(
            call(
                &me,
                "{query, s, #{filter => {eq, id, 1}}, #{touch => true}}"
            )
            .await,
            t("{ok, [#{id => 1}]}")
        );
        assert_eq!(
            call(
                &me,
                "{query, s, #{filter => {eq, id, 2}}, #{touch => false}}"
            )
            .await,
            t("{ok, [#{id => 2}]}")
        );
        // 2 expires 1 s after its creation, 1 about 0.5 s later (1 s after the query that
        // touched it): the order shows it, without measuring the gap. Were `touch => false`
        // ignored, 2 would be touched after 1 and expire after it.
        let mut expired = Vec::new();
        for _ in 0..2 {
            let notice = handler
                .recv_matching(WAIT, |s| matches!(s, Signal::Message(_)))
                .await;
            let Some(Signal::Message(Value::Tuple(notice))) = notice else {
                panic!("no expiry notice: {notice:?}")
            };
            let pk = notice[2].map_get_atom(crate::term::Atom::new("primary_key").unwrap());
            expired.push(pk.cloned().unwrap());
        }
        assert_eq!(expired, vec![t("#{id => 2}"), t("#{id => 1}")]);
    }

    #[tokio::test]
    async fn atomics_and_expressions_apply_in_the_actor() {
        let (node, _server) = serve("unit_atomics");
        let me = Mailbox::new(&node);
        call(&me, "{define, counter, #{primary_key => [id]}}").await;
        call(
            &me,
            "{create, counter, #{id => 1, n => 0, tag => <<\"a\">>}}",
        )
        .await;
        let inc =
            "{update, counter, #{id => 1}, #{}, #{atomics => [{n, {'+', {ref, n}, {value, 1}}}]}}";
        for _ in 0..5 {
            call(&me, inc).await;
        }
        assert_eq!(
            call(
                &me,
                "{update, counter, #{id => 1}, #{tag => <<\"x\">>}, #{atomics => [{tag, {concat, [{ref, tag}, {value, <<\"!\">>}]}}]}}"
            )
            .await,
            t("{ok, #{id => 1, n => 5, tag => <<\"a!\">>}}")
        );
        assert_eq!(
            call(
                &me,
                "{update, counter, #{id => 1}, #{}, #{atomics => [{n, {'if', {gt, {ref, n}, {value, 3}}, {error, too_big}, {ref, n}}}]}}"
            )
            .await,
            t("{error, {expr_error, too_big}}")
        );
        assert_eq!(
            call(&me, "{get, counter, #{id => 1}}").await,
            t("{ok, #{id => 1, n => 5, tag => <<\"a!\">>}}")
        );
        assert_eq!(
            call(&me, "{query, counter, #{filter => {expr, {gte, {'*', {ref, n}, {value, 2}}, {value, 10}}}}}").await,
            t("{ok, [#{id => 1, n => 5, tag => <<\"a!\">>}]}")
        );
        // Upserts: atomics read the existing record, conditions the incoming one.
        call(&me, "{define, doc, #{primary_key => [id]}}").await;
        call(&me, "{create, doc, #{id => 1, version => 2, hits => 1}}").await;
        let newer = "{upsert, doc, #{id => 1, version => 3, hits => 0}, #{fields => [version],                      atomics => [{hits, {'+', {ref, hits}, {value, 1}}}],                      condition => {expr, {gt, {incoming, version}, {ref, version}}}}}";
        assert_eq!(
            call(&me, newer).await,
            t("{ok, updated, #{id => 1, version => 3, hits => 2}}")
        );
        assert_eq!(
            call(&me, newer).await,
            t("{ok, skipped, #{id => 1, version => 3, hits => 2}}")
        );
        assert_eq!(
            call(
                &me,
                "{update, doc, #{id => 1}, #{}, #{atomics => [{x, {frob}}]}}"
            )
            .await,
            t(
                "{error, {bad_request, <<\"unknown value expression {frob} (expected value, ref, incoming, '+', '-', '*', '/', eq, neq, lt, lte, gt, gte, 'and', 'or', 'not', is_nil, 'if', 'cond', concat, error)\">>}}"
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_increments_are_exact() {
        let (node, _server) = serve("unit_race");
        let setup = Mailbox::new(&node);
        call(&setup, "{define, counter, #{primary_key => [id]}}").await;
        call(&setup, "{create, counter, #{id => 1, n => 0}}").await;
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let me = Mailbox::new(&node);
                call(&me, "{update, counter, #{id => 1}, #{}, #{atomics => [{n, {'+', {ref, n}, {value, 1}}}]}}").await
            }));
        }
        for task in tasks {
            assert!(matches!(task.await.unwrap(), Value::Tuple(_)));
        }
        assert_eq!(
            call(&setup, "{get, counter, #{id => 1}}").await,
            t("{ok, #{id => 1, n => 64}}")
        );
    }

    #[tokio::test]
    async fn typed_fields_filter_and_sort_by_meaning_and_identities_follow_them() {
        let (node, _server) = serve("unit_typed");
        let me = Mailbox::new(&node);
        let date = |y: u32, m: u32, d: u32| {
            format!(
                "#{{'__struct__' => 'Elixir.Date', calendar => 'Elixir.Calendar.ISO', year => {y}, month => {m}, day => {d}}}"
            )
        };
        call(
            &me,
            "{define, event, #{primary_key => [id], types => #{on => date, name => ci_string},              identities => [{by_name, [name]}, {open_slot, [slot], #{where => {eq, open, true}, nils_distinct => false}}]}}",
        )
        .await;
        let cases = [
            (1, date(2024, 1, 31)),
            (2, date(2025, 1, 1)),
            (3, date(2024, 12, 1)),
        ];
        for (id, on) in &cases {
            let reply = call(
                &me,
                &format!("{{create, event, #{{id => {id}, on => {on}, name => <<\"E{id}\">>}}}}"),
            )
            .await;
            assert!(
                matches!(&reply, Value::Tuple(items) if items[0] == t("ok")),
                "{reply:?}"
            );
        }
        let ids = |reply: Value| -> Vec<i64> {
            let Value::Tuple(items) = reply else { panic!() };
            items[1]
                .as_list()
                .unwrap()
                .iter()
                .map(|r| r.map_get(&t("id")).unwrap().as_int().unwrap())
                .collect()
        };
        let sorted = call(
            &me,
            "{query, event, #{sort => [{on, desc}], select => [id]}}",
        )
        .await;
        assert_eq!(ids(sorted), vec![2, 3, 1]);
        let after = call(
            &me,
            &format!(
                "{{query, event, #{{filter => {{gt, on, {}}}, sort => [{{on, asc}}]}}}}",
                date(2024, 6, 1)
            ),
        )
        .await;
        assert_eq!(ids(after), vec![3, 2]);
        // ci_string identity: case-insensitive.
        assert_eq!(
            call(&me, "{create, event, #{id => 9, name => <<\"e1\">>}}").await,
            t("{error, {identity_conflict, by_name, #{name => <<\"e1\">>}}}")
        );
        assert_eq!(
            ids(call(&me, "{query, event, #{filter => {eq, name, <<\"e2\">>}}}").await),
            vec![2]
        );
        // `where` and nils_distinct => false: only open records take part, nil is a value.
        call(
            &me,
            "{create, event, #{id => 10, name => <<\"a\">>, open => true}}",
        )
        .await;
        assert_eq!(
            call(
                &me,
                "{create, event, #{id => 11, name => <<\"b\">>, open => true}}"
            )
            .await,
            t("{error, {identity_conflict, open_slot, #{slot => nil}}}")
        );
        let closed = call(
            &me,
            "{create, event, #{id => 12, name => <<\"c\">>, open => false}}",
        )
        .await;
        assert!(
            matches!(&closed, Value::Tuple(items) if items[0] == t("ok")),
            "{closed:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_identity_upsert_never_applies_to_a_record_that_lost_the_identity() {
        let (node, _server) = serve("unit_upsert_race");
        let me = Mailbox::new(&node);
        call(
            &me,
            "{define, user, #{primary_key => [id], identities => [{email, [email]}]}}",
        )
        .await;
        for round in 0..50 {
            call(
                &me,
                &format!("{{create, user, #{{id => {round}, email => <<\"x{round}\">>}}}}"),
            )
            .await;
            // Move the identity away and upsert on it at the same time.
            let node2 = node.clone();
            let mover = tokio::spawn(async move {
                let m = Mailbox::new(&node2);
                call(
                    &m,
                    &format!(
                        "{{update, user, #{{id => {round}}}, #{{email => <<\"moved{round}\">>}}}}"
                    ),
                )
                .await
            });
            let upsert = call(
                &me,
                &format!("{{upsert, user, #{{id => {}, email => <<\"x{round}\">>, n => 1}}, #{{keys => [email]}}}}", 1000 + round),
            )
            .await;
            mover.await.unwrap();
            let Value::Tuple(items) = upsert else {
                panic!()
            };
            let record = &items[2];
            // Whichever record the upsert touched or made had the upserted email in that turn.
            assert_eq!(
                record.map_get(&t("email")),
                Some(&Value::from(format!("x{round}").as_str()))
            );
            let with_email = call(
                &me,
                &format!("{{query, user, #{{filter => {{eq, email, <<\"x{round}\">>}}}}}}"),
            )
            .await;
            let Value::Tuple(q) = with_email else {
                panic!()
            };
            let holders = q[1].as_list().unwrap().len();
            if items[1] == t("created") {
                // The update moved the email first: the upsert made a new record with it.
                assert_eq!(holders, 1, "the created record has the email");
            } else {
                // The upsert updated the record before the move: nobody has the email now.
                assert_eq!((items[1].clone(), holders), (t("updated"), 0));
            }
        }
    }

    #[tokio::test]
    async fn update_and_destroy_by_query() {
        let (node, _server) = serve("unit_where");
        let me = Mailbox::new(&node);
        call(&me, "{define, item, #{primary_key => [id]}}").await;
        for id in 1..=6 {
            call(
                &me,
                &format!(
                    "{{create, item, #{{id => {id}, n => {id}, team => {}}}}}",
                    id % 2
                ),
            )
            .await;
        }
        assert_eq!(
            call(&me, "{update_where, item, #{filter => {eq, team, 0}, sort => [{id, desc}]}, #{set => #{hit => true}, atomics => [{n, {'*', {ref, n}, {value, 10}}}]}}").await,
            t("{ok, [#{id => 6, n => 60, team => 0, hit => true}, #{id => 4, n => 40, team => 0, hit => true}, #{id => 2, n => 20, team => 0, hit => true}]}")
        );
        // A failing expression on any matching record changes nothing.
        assert_eq!(
            call(&me, "{update_where, item, #{}, #{atomics => [{n, {'if', {gt, {ref, n}, {value, 50}}, {error, nope}, {ref, n}}}]}}").await,
            t("{error, {expr_error, nope}}")
        );
        assert_eq!(
            call(&me, "{update_where, item, #{filter => {eq, team, 1}, limit => 2}, #{set => #{hit => false}, return => count}}").await,
            t("{ok, 2}")
        );
        let Value::Tuple(reply) = call(&me, "{whereis, item, #{id => 3}}").await else {
            panic!()
        };
        let Value::Pid(pid) = &reply[1] else { panic!() };
        let reference = me.monitor(pid);
        assert_eq!(
            call(
                &me,
                "{destroy_where, item, #{filter => {eq, team, 1}}, #{return => count}}"
            )
            .await,
            t("{ok, 3}")
        );
        assert_eq!(
            me.recv(WAIT).await,
            Some(Signal::Down {
                reference,
                target: **pid,
                reason: t("normal")
            })
        );
        assert_eq!(
            call(
                &me,
                "{destroy_where, item, #{sort => [{id, asc}], limit => 1}}"
            )
            .await,
            t("{ok, [#{id => 2, n => 20, team => 0, hit => true}]}")
        );
        assert_eq!(
            call(&me, "{destroy_where, item, #{filter => false}}").await,
            t("{ok, []}")
        );
        assert_eq!(
            call(&me, "{info, item}").await.as_tuple().unwrap()[1].map_get(&t("count")),
            Some(&Value::Int(2))
        );
    }

    #[tokio::test]
    async fn tenants_are_separate_namespaces() {
        let (node, _server) = serve("unit_tenants");
        let handler = Mailbox::new(&node);
        let me = Mailbox::new(&node);
        call(&me, "{define, post, #{primary_key => [id], identities => [{slug, [slug]}], maximum_lifetime => 50}}").await;
        call(&handler, "{subscribe, [post]}").await;
        assert_eq!(
            call(&me, "{create, {post, <<\"a\">>}, #{id => 1, slug => x}}").await,
            t("{ok, #{id => 1, slug => x}}")
        );
        // Same key and identity in another tenant and without tenant: no conflict.
        assert_eq!(
            call(&me, "{create, {post, <<\"b\">>}, #{id => 1, slug => x}}").await,
            t("{ok, #{id => 1, slug => x}}")
        );
        call(&me, "{create, post, #{id => 1, slug => x}}").await;
        assert_eq!(
            call(&me, "{create, {post, <<\"a\">>}, #{id => 2, slug => x}}").await,
            t("{error, {identity_conflict, slug, #{slug => x}}}")
        );
        assert_eq!(
            call(&me, "{query, {post, <<\"b\">>}, #{}}").await,
            t("{ok, [#{id => 1, slug => x}]}")
        );
        assert_eq!(
            call(&me, "{get, {post, <<\"c\">>}, #{id => 1}}").await,
            t("{error, not_found}")
        );
        assert_eq!(
            call(&me, "{update, {post, <<\"a\">>}, #{id => 1}, #{n => 1}}").await,
            t("{ok, #{id => 1, slug => x, n => 1}}")
        );
        assert_eq!(
            call(&me, "{get, {post, <<\"b\">>}, #{id => 1}}").await,
            t("{ok, #{id => 1, slug => x}}")
        );
        assert_eq!(
            call(&me, "{get, {nope, <<\"b\">>}, #{id => 1}}").await,
            t("{error, {unknown_resource, nope}}")
        );
        // Expiry notices name the tenant.
        let notice = handler
            .recv_matching(WAIT, |s| matches!(s, Signal::Message(Value::Tuple(n)) if n[2].map_get(&t("tenant")) == Some(&t("<<\"b\">>"))))
            .await;
        assert!(notice.is_some(), "a notice for tenant b");
        assert_eq!(call(&me, "{clear, {post, <<\"a\">>}}").await, t("{ok, 1}"));
        assert_eq!(call(&me, "{clear, post}").await, t("{ok, 2}"));
        assert_eq!(
            call(&me, "{define, {post, x}, #{primary_key => [id]}}").await,
            t("{error, {bad_request, <<\"a resource must be an atom, got: {post,x}\">>}}")
        );
    }
}
