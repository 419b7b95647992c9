%% A cluster of three Rust nodes started as the cluster issue writes it (the first with
%% `--replicas 3`, the others with `--join First` only; docs/OPERATIONS.md "Clustering"): any
%% member serves every request as a single node would, a write acknowledged by any member
%% survives a SIGKILL of one member, a rolling restart (SIGTERM, then the same name again) loses
%% nothing, and an expired record leaves every member once.
%%
%% The histories: many processes write per-key sequence numbers through all three members
%% while a member is killed or restarted; every acknowledged write must be readable from every
%% member afterwards (the value is at least the last acknowledged and at most the last
%% attempted number), and the members must agree. The counts are logged.
-module(ash_cluster_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-import(ash_cluster_lib, [call/2, info/1, await_healthy/2, start_writers/4, stop_writers/1,
                          check_history/3]).

%% Bounded waits: generous, they only stop a broken run.
-define(WAIT, 30000).
-define(CALL, 20000).

all() ->
    [forms_one_cluster, any_member_serves_every_request, identities_hold_across_members,
     request_ids_apply_a_write_once,
     queries_equal_a_single_node, record_pids_go_through_the_log_and_follow_the_leader,
     sigkill_of_the_leader_loses_no_acknowledged_write, rolling_restart_loses_nothing,
     expired_record_leaves_every_member_once,
     join_a_beam_node_or_connect_makes_no_member,
     a_single_node_joined_becomes_a_member_with_its_records,
     a_joiner_killed_while_catching_up_stalls_nothing,
     a_joiner_stopped_while_catching_up_withdraws,
     nodes_started_together_with_join_form_one_cluster,
     a_lost_voter_gives_its_vote_to_a_spare,
     a_lost_learner_is_removed_and_joins_again_when_back,
     a_durable_learner_removed_keeps_its_other_groups_files,
     the_last_voter_stops_in_time_when_its_heir_is_lost,
     a_joining_member_takes_the_clusters_replicas,
     a_leader_without_a_vote_hands_the_lead_to_a_voter,
     a_lost_majority_is_recovered_from_the_survivors_copy].

init_per_suite(Config) ->
    Base = lists:flatten(io_lib:format("cl_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Names = [Base ++ "_" ++ L || L <- ["a", "b", "c"]],
    [First | Rest] = Names,
    MetricsPort = free_port(),
    A = ash_node:start(Config, #{name => First,
                                 args => ["--replicas", "3", "--metrics-addr",
                                          "127.0.0.1:" ++ integer_to_list(MetricsPort)]}),
    persistent_term:put({?MODULE, metrics_port}, MetricsPort),
    Others = [ash_node:start(Config, #{name => N, args => join_args(A)}) || N <- Rest],
    Members = [A | Others],
    await_healthy(Members, 3),
    set_members(Members),
    Config.

end_per_suite(_Config) ->
    [ash_node:stop(M) || M <- members()],
    persistent_term:erase({?MODULE, members}),
    ok.

%% The members now (cases restart them): kept outside Config so end_per_suite stops the
%% last ones.
members() -> persistent_term:get({?MODULE, members}).
set_members(Members) -> persistent_term:put({?MODULE, members}, Members).

init_per_testcase(TC, Config) ->
    [{res, ash_node:uniq_res(TC)} | Config].

end_per_testcase(_, _) -> ok.

free_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(S),
    gen_tcp:close(S),
    Port.

%% The first member's Prometheus text, over real HTTP.
scrape() ->
    {ok, _} = application:ensure_all_started(inets),
    Url = "http://127.0.0.1:" ++ integer_to_list(persistent_term:get({?MODULE, metrics_port}))
        ++ "/metrics",
    {ok, {{_, 200, _}, _, Body}} = httpc:request(get, {Url, []}, [{timeout, 5000}], []),
    Body.

gauge(Body, Line) -> string:find(Body, Line) =/= nomatch.

%% `--join` alone: the peer is a member, so this node joins its cluster.
join_args(#{node := Peer}) -> ["--join", atom_to_list(Peer)].

nodes_of(_Config) -> [ash_node:node(M) || M <- members()].

leader(Config) ->
    #{leader := L} = info(hd(nodes_of(Config))),
    _ = Config,
    [M] = [M || M <- members(), ash_node:node(M) =:= L],
    M.

%% ---------------------------------------------------------------------------------------------

forms_one_cluster(Config) ->
    Nodes = nodes_of(Config),
    Infos = [info(N) || N <- Nodes],
    [#{members := Members, leader := Leader} | _] = Infos,
    ?assertEqual(lists:sort(Nodes), lists:sort(Members)),
    [begin
         ?assertMatch(#{healthy := true, admitting := true, replicas := 3, shards := 1,
                        leader := Leader, self := Self}, I),
         ?assertEqual(lists:sort(Nodes), lists:sort(maps:get(voters, I)))
     end || {Self, I} <- lists:zip(Nodes, Infos)],
    %% `status` shows it, for people and for scripts.
    Status = os:cmd(io_lib:format("~s status --node ~s --cookie ~s --json",
                                  [ash_node:bin(), hd(Nodes), erlang:get_cookie()])),
    ct:log("status: ~s", [Status]),
    ?assertNotEqual(nomatch, string:find(Status, "\"healthy\":true")),
    ?assertNotEqual(nomatch, string:find(Status, "\"admitting\":true")),
    [?assertNotEqual(nomatch, string:find(Status, atom_to_list(N))) || N <- Nodes],
    Human = os:cmd(io_lib:format("~s status --node ~s --cookie ~s",
                                 [ash_node:bin(), hd(Nodes), erlang:get_cookie()])),
    ?assertNotEqual(nomatch, string:find(Human, "healthy (3 members, 3 voting of 3 replicas")),
    %% The cluster gauges (sampled once a second).
    ?assert(ash_node:poll(fun() ->
                                  B = scrape(),
                                  gauge(B, "ash_gen_server_cluster_members 3")
                                      andalso gauge(B, "ash_gen_server_cluster_voters 3")
                                      andalso gauge(B, "ash_gen_server_cluster_healthy 1")
                          end, ?WAIT, 200) orelse scrape()),
    %% Every member is connected to every other (hidden connections are not transitive).
    [?assert(ash_node:poll(fun() ->
                                   {ok, #{peers := Peers}} = call(N, stats),
                                   lists:all(fun(O) -> lists:member(O, Peers) end, Nodes -- [N])
                           end, ?WAIT, 100)) || N <- Nodes].

any_member_serves_every_request(Config) ->
    R = ?config(res, Config),
    [A, B, C] = nodes_of(Config),
    ok = call(B, {define, R, #{primary_key => [id]}}),
    [?assertMatch({ok, _}, call(N, {info, R})) || N <- [A, B, C]],
    [{ok, _} = call(lists:nth(I rem 3 + 1, [A, B, C]), {create, R, #{id => I, n => I rem 5}})
     || I <- lists:seq(1, 30)],
    ?assertEqual({error, {already_exists, #{id => 1}}}, call(C, {create, R, #{id => 1}})),
    {ok, _} = call(A, {update, R, #{id => 2}, #{n => 100}}),
    [?assertEqual({ok, #{id => 2, n => 100}}, call(N, {get, R, #{id => 2}})) || N <- [A, B, C]],
    Q = #{filter => {gte, n, 3}, sort => [{n, desc}, {id, asc}], limit => 5, offset => 1},
    Results = [call(N, {query, R, Q}) || N <- [A, B, C]],
    ?assertMatch([{ok, [_, _, _, _, _]}, _, _], Results),
    ?assertEqual(1, length(lists:usort(Results))),
    Aggs = [call(N, {aggregate, R, #{}, [{c, count, id, #{}}, {s, sum, n, #{}}]}) || N <- [A, B, C]],
    ?assertMatch([{ok, #{c := 30}}, _, _], Aggs),
    ?assertEqual(1, length(lists:usort(Aggs))),
    ok = call(C, {destroy, R, #{id => 3}}),
    [?assertEqual({error, not_found}, call(N, {get, R, #{id => 3}})) || N <- [A, B, C]],
    ?assertEqual({ok, 1}, call(B, {destroy_where, R, #{filter => {eq, n, 100}}, #{return => count}})),
    ?assertEqual({error, not_found}, call(A, {get, R, #{id => 2}})),
    ?assertMatch({error, {unknown_resource, _}}, call(A, {get, nope_never_defined, #{id => 1}})),
    ?assertMatch({error, {unknown_request, _}}, call(C, {no_such_request, 1})).

identities_hold_across_members(Config) ->
    R = ?config(res, Config),
    [A, B, C] = nodes_of(Config),
    ok = call(A, {define, R, #{primary_key => [id], identities => [{email, [email]}]}}),
    Parent = self(),
    %% Three creators race for one email through three members: exactly one wins.
    [spawn_link(fun() -> Parent ! {I, call(N, {create, R, #{id => I, email => <<"x@y">>}})} end)
     || {I, N} <- [{1, A}, {2, B}, {3, C}]],
    Replies = [receive {I, Rep} -> Rep after ?WAIT -> timeout end || I <- [1, 2, 3]],
    ?assertEqual(1, length([ok || {ok, _} <- Replies]), Replies),
    ?assertEqual(2, length([x || {error, {identity_conflict, _, _}} <- Replies]), Replies),
    %% Three all-or-nothing bulk creates race the same way, each with a record of its own:
    %% one is created whole, the others not at all, and every member holds the same records.
    [spawn_link(fun() ->
                    Batch = [#{id => 10 + I, email => I}, #{id => 20 + I, email => <<"z@y">>}],
                    Parent ! {bulk, I, call(N, {bulk_create, R, Batch, #{all_or_nothing => true}})}
                end) || {I, N} <- [{1, A}, {2, B}, {3, C}]],
    Bulk = [receive {bulk, I, Rep} -> {I, Rep} after ?WAIT -> timeout end || I <- [1, 2, 3]],
    [Winner] = [I || {I, {ok, [_, _]}} <- Bulk],
    ?assertEqual(2, length([x || {_, {error, {record, 2, {identity_conflict, email,
                                                         #{email := <<"z@y">>}}}}} <- Bulk]),
                 Bulk),
    Ids = fun(N) -> {ok, Rs} = call(N, {query, R, #{sort => [{id, asc}]}}),
                    [Id || #{id := Id} <- Rs] end,
    Expected = lists:sort([Id || {ok, #{id := Id}} <- Replies] ++ [10 + Winner, 20 + Winner]),
    [?assertEqual(Expected, Ids(N)) || N <- [A, B, C]].

%% A write sent again with the same request id (PROTOCOL.md "Request ids"), to the same member or
%% another, is applied once and answered as the first time; without an id it is a new write.
request_ids_apply_a_write_once(Config) ->
    R = ?config(res, Config),
    [A, B, C] = nodes_of(Config),
    ok = call(A, {define, R, #{primary_key => [id]}}),
    Id = erlang:unique_integer([positive]),
    Create = {request_id, Id, {create, R, #{id => 1, n => 0}}},
    {ok, Created} = call(A, Create),
    [?assertEqual({ok, Created}, call(N, Create)) || N <- [A, B, C]],
    ?assertEqual({error, {already_exists, #{id => 1}}}, call(B, {create, R, #{id => 1}})),
    Inc = fun(I) ->
              {request_id, I, {update, R, #{id => 1}, #{},
                               #{atomics => [{n, {'+', {ref, n}, {value, 1}}}]}}}
          end,
    %% One increment sent three times through three members counts once...
    [?assertEqual({ok, #{id => 1, n => 1}}, call(N, Inc(Id + 1))) || N <- [C, B, A]],
    %% ...two with ids of their own count twice.
    {ok, #{n := 2}} = call(B, Inc(Id + 2)),
    {ok, #{n := 3}} = call(C, Inc(Id + 3)),
    [?assertEqual({ok, #{id => 1, n => 3}}, call(N, {get, R, #{id => 1}})) || N <- [A, B, C]],
    %% A destroy repeated with its id answers ok again (not not_found), and nothing else changes.
    Destroy = {request_id, Id + 4, {destroy, R, #{id => 1}}},
    [?assertEqual(ok, call(N, Destroy)) || N <- [A, C]],
    ?assertEqual({error, not_found}, call(B, {get, R, #{id => 1}})),
    ?assertMatch({error, {bad_request, _}}, call(C, {request_id, -1, {create, R, #{id => 9}}})),
    ?assertEqual({error, not_found}, call(A, {get, R, #{id => 9}})).

%% The same records in the cluster and in a single node: every query, page and aggregate (with
%% and without group_by) answers the same through each member as the single node does.
queries_equal_a_single_node(Config) ->
    R = ?config(res, Config),
    Members = nodes_of(Config),
    Single = ash_node:start(Config, #{tag => "cl_single"}),
    S = ash_node:node(Single),
    try
        Def = {define, R, #{primary_key => [id]}},
        ok = call(hd(Members), Def),
        ok = call(S, Def),
        Teams = [<<"a">>, <<"b">>, <<"c">>, nil],
        Records = [maps:filter(fun(_, V) -> V =/= skip end,
                               #{id => I, n => I rem 7, team => lists:nth(I rem 4 + 1, Teams),
                                 score => case I rem 11 of 0 -> skip; _ -> (I * 37) rem 101 end})
                   || I <- lists:seq(1, 300)],
        [begin
             {ok, Results} = call(N, {bulk_create, R, Records, #{}}),
             ?assertEqual(300, length([ok || {ok, _} <- Results]))
         end || N <- [lists:last(Members), S]],
        Queries = [#{},
                   #{filter => {gte, n, 3}, sort => [{score, desc}, {id, asc}], limit => 17,
                     offset => 5},
                   #{sort => [{team, asc_nils_first}, {n, desc}], offset => 290},
                   #{filter => {'or', {is_nil, score}, {in, team, [<<"b">>]}},
                     sort => [{score, desc_nils_last}], limit => 40, select => [n]},
                   #{filter => {'and', {gt, score, 50}, {'not', {eq, team, nil}}}, limit => 10},
                   #{sort => [{n, asc}, {score, asc}], offset => 20, limit => 20}],
        Aggs = [{c, count, nil, #{}}, {cs, count, score, #{}}, {s, sum, score, #{}},
                {a, avg, score, #{}}, {mn, min, score, #{}}, {mx, max, team, #{}},
                {f, first, score, #{}}, {l, list, id, #{}}, {u, count, team, #{uniq => true}},
                {e, exists, nil, #{}}],
        Expected = [{query, Q, call(S, {query, R, Q})} || Q <- Queries]
            ++ [{aggregate, Q, call(S, {aggregate, R, Q, Aggs})} || Q <- Queries]
            ++ [{group_by, Q, call(S, {aggregate, R, Q, Aggs, #{group_by => team}})}
                || Q <- Queries],
        [?assertMatch({_, _, {ok, _}}, E) || E <- Expected],
        [?assertEqual({Kind, Q, Reply},
                      {Kind, Q, case Kind of
                                    query -> call(N, {query, R, Q});
                                    aggregate -> call(N, {aggregate, R, Q, Aggs});
                                    group_by -> call(N, {aggregate, R, Q, Aggs,
                                                         #{group_by => team}})
                                end})
         || {Kind, Q, Reply} <- Expected, N <- Members]
    after
        ash_node:stop(Single)
    end.

%% ---------------------------------------------------------------------------------------------
%% A record's pid lives on the leader; its calls go through the log like the same requests by
%% key (every member's replica has them); `destroy` through it answers before the 'DOWN'; when
%% another member leads, the pid ends with {shutdown, {moved, NewLeader}} and `whereis` gives
%% the new one, there.
record_pids_go_through_the_log_and_follow_the_leader(Config) ->
    R = ?config(res, Config),
    [A, B, C] = Nodes = nodes_of(Config),
    ok = call(A, {define, R, #{primary_key => [id]}}),
    {ok, _} = call(B, {create, R, #{id => 1, n => 0}}),
    {ok, _} = call(C, {create, R, #{id => 2, n => 0}}),
    Old = leader(Config),
    OldNode = ash_node:node(Old),
    {ok, Pid} = call(C, {whereis, R, #{id => 1}}),
    ?assertEqual(OldNode, node(Pid)),
    [?assertEqual({ok, Pid}, call(N, {whereis, R, #{id => 1}})) || N <- Nodes],
    MRef = erlang:monitor(process, Pid),
    ?assertEqual({ok, #{id => 1, n => 1}}, gen_server:call(Pid, {update, #{n => 1}}, ?CALL)),
    Inc = #{atomics => [{n, {'+', {ref, n}, {value, 1}}}]},
    ?assertEqual({ok, #{id => 1, n => 2}}, gen_server:call(Pid, {update, #{}, Inc}, ?CALL)),
    ?assertEqual({error, stale},
                 gen_server:call(Pid, {update, #{n => 9}, #{filter => {eq, n, 0}}}, ?CALL)),
    ?assertEqual({ok, #{id => 1, n => 2}}, gen_server:call(Pid, get, ?CALL)),
    %% Each member's own replica, asked directly: the pid's writes went through the log.
    Replicas = fun(Id) ->
                       [gen_server:call({ash_gen_server_records, N}, {get, R, #{id => Id}}, ?CALL)
                        || N <- Nodes]
               end,
    ?assert(ash_node:poll(fun() -> Replicas(1) =:= lists:duplicate(3, {ok, #{id => 1, n => 2}})
                          end, ?WAIT, 20) orelse Replicas(1)),
    {ok, Pid2} = call(A, {whereis, R, #{id => 2}}),
    M2 = erlang:monitor(process, Pid2),
    %% gen_server:call monitors the pid: a 'DOWN' before the reply would make it exit.
    ?assertEqual(ok, gen_server:call(Pid2, destroy, ?CALL)),
    receive {'DOWN', M2, process, Pid2, Why} -> ?assertEqual(normal, Why)
    after ?WAIT -> ct:fail(no_down_after_destroy)
    end,
    ?assert(ash_node:poll(fun() -> Replicas(2) =:= lists:duplicate(3, {error, not_found}) end,
                          ?WAIT, 20) orelse Replicas(2)),
    %% Another member takes the lead: the leader frozen (SIGSTOP) until the others elect one,
    %% then thawed (it stays a member and learns who leads).
    OsPid = integer_to_list(ash_node:os_pid(Old)),
    [Other | _] = Nodes -- [OldNode],
    os:cmd("kill -STOP " ++ OsPid),
    NewLeader = fun() ->
                        case info(Other) of
                            #{leader := L} when L =/= OldNode, L =/= undefined -> L;
                            _ -> false
                        end
                end,
    Elected = ash_node:poll(fun() -> NewLeader() =/= false end, ?WAIT, 100),
    os:cmd("kill -CONT " ++ OsPid),
    ?assert(Elected),
    NewNode = NewLeader(),
    ct:pal("~p took the lead from ~p", [NewNode, OldNode]),
    receive {'DOWN', MRef, process, Pid, Reason} ->
            ?assertEqual({shutdown, {moved, NewNode}}, Reason)
    after ?WAIT -> ct:fail(no_moved_down)
    end,
    {ok, NewPid} = call(A, {whereis, R, #{id => 1}}),
    ?assertEqual(NewNode, node(NewPid)),
    ?assertEqual({ok, #{id => 1, n => 2}}, gen_server:call(NewPid, get, ?CALL)),
    await_healthy(members(), 3),
    %% The leader drained (SIGTERM): it leaves, another member leads, and its pids move there
    %% before it exits. It comes back as a new member.
    M3 = erlang:monitor(process, NewPid),
    [Drained] = [M || M <- members(), ash_node:node(M) =:= NewNode],
    ?assertEqual(0, ash_node:stop(Drained)),
    Moved = receive {'DOWN', M3, process, NewPid, Why3} -> Why3
            after ?WAIT -> no_down_on_drain
            end,
    ?assertMatch({shutdown, {moved, N}} when N =/= NewNode, Moved),
    [Peer | _] = members() -- [Drained],
    Back = ash_node:start(Config, #{name => maps:get(name, Drained), args => join_args(Peer)}),
    set_members([case M of Drained -> Back; _ -> M end || M <- members()]),
    await_healthy(members(), 3),
    {shutdown, {moved, Third}} = Moved,
    {ok, ThirdPid} = call(Third, {whereis, R, #{id => 1}}),
    ?assertEqual(maps:get(leader, info(Third)), node(ThirdPid)),
    ?assertEqual({ok, #{id => 1, n => 2}}, gen_server:call(ThirdPid, get, ?CALL)).

%% Histories under failures

sigkill_of_the_leader_loses_no_acknowledged_write(Config) ->
    R = ?config(res, Config),
    Nodes = nodes_of(Config),
    ok = call(hd(Nodes), {define, R, #{primary_key => [id]}}),
    Writers = start_writers(Nodes, R, 8, 4),
    timer:sleep(1500),
    Leader = leader(Config),
    ct:pal("killing the leader ~p", [ash_node:node(Leader)]),
    ash_node:stop(Leader, "KILL"),
    timer:sleep(2000),
    %% The same node again, with a new Raft id: it rejoins and catches up.
    Name = maps:get(name, Leader),
    [Survivor | _] = [M || M <- members(), M =/= Leader],
    Back = ash_node:start(Config, #{name => Name, args => join_args(Survivor)}),
    Members = [case M of Leader -> Back; _ -> M end || M <- members()],
    set_members(Members),
    timer:sleep(1000),
    History = stop_writers(Writers),
    await_healthy(Members, 3),
    ?assertEqual({maps:size(History), 0, 0}, check_history(Nodes, R, History)).

rolling_restart_loses_nothing(Config) ->
    R = ?config(res, Config),
    Nodes = nodes_of(Config),
    ok = call(hd(Nodes), {define, R, #{primary_key => [id]}}),
    %% An expiry handler subscribed before the restarts (on the member drained first) is
    %% still known afterwards, when every member is a new one that learned it from the others.
    Expiring = list_to_atom(atom_to_list(R) ++ "_expiring"),
    ok = call(hd(Nodes), {define, Expiring, #{primary_key => [id], inactivity_timeout => 300}}),
    ok = call(hd(Nodes), {subscribe, [Expiring]}),
    Writers = start_writers(Nodes, R, 6, 4),
    First = hd(members()),
    Members = lists:foldl(
                fun(Old, Current) ->
                        timer:sleep(700),
                        ct:pal("draining ~p", [ash_node:node(Old)]),
                        drain(Old, Old =:= First),
                        [Peer | _] = Current -- [Old],
                        New = ash_node:start(Config, #{name => maps:get(name, Old),
                                                       args => join_args(Peer)}),
                        Now = [case M of Old -> New; _ -> M end || M <- Current],
                        set_members(Now),
                        await_healthy(Now, 3),
                        Now
                end, members(), members()),
    History = stop_writers(Writers),
    ?assertEqual(3, length(Members)),
    ?assertEqual({maps:size(History), 0, 0}, check_history(Nodes, R, History)),
    [Some | _] = nodes_of(Config),
    {ok, _} = call(Some, {create, Expiring, #{id => 1}}),
    receive
        {ash_gen_server, expired, #{resource := Expiring, primary_key := #{id := 1}}} -> ok
    after ?WAIT -> ct:fail(no_expiry_notice_after_the_restarts)
    end,
    ok = call(Some, {destroy, Expiring, #{id => 1}}),
    receive
        {ash_gen_server, expired, #{resource := Expiring}} = Again ->
            ct:fail({second_notice, Again})
    after 1500 -> ok
    end,
    ok = call(Some, unsubscribe).

%% The first member is drained with `ash-gen-server drain`, the others with SIGTERM: both leave
%% the cluster and exit 0.
drain(Member, true) ->
    Args = ["drain", "--node", atom_to_list(ash_node:node(Member)),
            "--cookie", atom_to_list(erlang:get_cookie())],
    {Status, Out} = ash_node:run_bin(Args, 90000),
    ct:pal("drain: ~p ~s", [Status, Out]),
    ?assertEqual(0, Status),
    ?assertNotEqual(nomatch, string:find(Out, "drained")),
    %% The node has left EPMD: it has exited, or is about to.
    ?assert(lists:member(ash_node:stop(Member), [0, {already_exited, 0}]));
drain(Member, false) ->
    ?assertEqual(0, ash_node:stop(Member)).

expired_record_leaves_every_member_once(Config) ->
    R = ?config(res, Config),
    [A, B, C] = Nodes = nodes_of(Config),
    ok = call(A, {define, R, #{primary_key => [id], inactivity_timeout => 300}}),
    %% Without a handler: the record leaves every member.
    {ok, _} = call(B, {create, R, #{id => 1}}),
    %% Each member's own replica, asked without touching the record (a get would keep it alive).
    Count = fun(N) ->
                    case gen_server:call({ash_gen_server_records, N}, {info, R}, ?CALL) of
                        {ok, #{count := K}} -> K;
                        Other -> Other    % a member still applying the definition
                    end
            end,
    Gone = fun(_Id) -> fun() -> [Count(N) || N <- Nodes] =:= [0, 0, 0] end end,
    Counts = fun(Want) -> fun() -> [Count(N) || N <- Nodes] =:= Want end end,
    %% A member may apply the log a moment after the majority acknowledged it.
    ?assert(ash_node:poll(Counts([1, 1, 1]), ?WAIT, 20) orelse [Count(N) || N <- Nodes]),
    ?assert(ash_node:poll(Gone(1), ?WAIT, 50) orelse [Count(N) || N <- Nodes]),
    %% A handler subscribed on one member gets exactly one notice, whoever leads.
    Self = self(),
    ok = call(C, {subscribe, [R]}),
    {ok, _} = call(A, {create, R, #{id => 2}}),
    receive
        {ash_gen_server, expired, #{primary_key := #{id := 2}}} -> ok
    after ?WAIT -> ct:fail(no_expiry_notice)
    end,
    ok = call(C, {destroy, R, #{id => 2}}),
    receive
        {ash_gen_server, expired, #{primary_key := #{id := 2}}} = Again -> ct:fail({second_notice, Again})
    after 1500 -> ok
    end,
    ?assert(ash_node:poll(Gone(2), ?WAIT, 50)),
    ok = call(C, unsubscribe),
    _ = Self.

%% `--join` a BEAM node (this test's own) makes no member, and `--connect` only connects, even
%% to a single Rust node that would become a member if joined. Each is a single node (a
%% cluster of one, not a member of anything), connected to its peer; neither waits on it.
join_a_beam_node_or_connect_makes_no_member(Config) ->
    Base = lists:flatten(io_lib:format("jn_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Single = ash_node:start(Config, #{name => Base ++ "_single"}),
    ToBeam = ash_node:start(Config, #{name => Base ++ "_to_beam",
                                      args => ["--join", atom_to_list(node())]}),
    ToSingle = ash_node:start(Config, #{name => Base ++ "_to_single",
                                        args => ["--connect", atom_to_list(ash_node:node(Single))]}),
    try
        [begin
             N = ash_node:node(M),
             ?assertMatch({ok, #{members := [N], replicas := 1, leader := N, admitting := true}},
                          call(N, cluster)),
             %% A single node: it has no endpoint of a member.
             ?assertNot(registered(N, ash_gen_server_raft))
         end || M <- [ToBeam, ToSingle, Single]],
        ?assertNotEqual([], ash_node:log_contains(ToBeam, ["no --join peer is a cluster member"])),
        %% Each connected to its peer at start.
        ?assertNotEqual([], ash_node:log_contains(ToBeam, ["joined", atom_to_list(node())])),
        [begin
             {ok, #{peers := Peers}} = call(ash_node:node(Peer), stats),
             ?assert(lists:member(ash_node:node(M), Peers))
         end || {M, Peer} <- [{ToSingle, Single}]],
        %% And the suite's members started with --join alone found their peer a member.
        Joined = [M || M <- members(), not lists:member("--replicas", maps:get(args, M))],
        ?assertNotEqual([], Joined),
        [?assertNotEqual([], ash_node:log_contains(M, ["joining its cluster"]))
         || M <- Joined]
    after
        [ash_node:stop(M) || M <- [ToSingle, ToBeam, Single]]
    end.

%% A single node started with no flag, holding records and serving writers, becomes a member
%% when another Rust node joins it (`--join` alone), its records with it: nothing written
%% before, during or after the change is lost (the writers' history is checked, through every
%% node, linearizability included), a record pid given out before goes on working (its writes
%% go through the log), and once a third node has joined, a SIGKILL of the first node loses
%% nothing: it is no longer the only copy.
a_single_node_joined_becomes_a_member_with_its_records(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("cv_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    First = ash_node:start(Config, #{name => Base ++ "_first"}),
    FirstNode = ash_node:node(First),
    ok = call(FirstNode, {define, R, #{primary_key => [id]}}),
    Before = [{ok, _} = call(FirstNode, {create, R, #{id => {before, I}, n => I}})
              || I <- lists:seq(1, 50)],
    {ok, _} = call(FirstNode, {create, R, #{id => by_pid, n => 0}}),
    {ok, Pid} = call(FirstNode, {whereis, R, #{id => by_pid}}),
    Self = self(),
    PidWriter = spawn_link(fun() -> pid_writer(Self, Pid, 1, 0) end),
    Writers = start_writers([FirstNode], R, 4, 3),
    timer:sleep(500),
    Join = ["--join", atom_to_list(FirstNode)],
    Second = ash_node:start(Config, #{name => Base ++ "_second", args => Join}),
    Third = ash_node:start(Config, #{name => Base ++ "_third", args => Join}),
    Started = [First, Second, Third],
    try
        await_healthy(Started, 3),
        timer:sleep(500),
        PidWriter ! stop,
        PidAcked = receive {pid_writer, Acked} -> Acked after ?WAIT -> ct:fail(pid_writer_stuck) end,
        History = stop_writers(Writers),
        All = [ash_node:node(M) || M <- Started],
        ?assertEqual({maps:size(History), 0, 0}, check_history(All, R, History)),
        ct:pal("the pid's writer: ~b updates acknowledged", [PidAcked]),
        ?assert(PidAcked > 0),
        ?assertNotEqual([], ash_node:log_contains(First, ["became a cluster member"])),
        %% The first node admits members again, as every member does.
        [?assertMatch(#{admitting := true}, ash_cluster_lib:info(N)) || N <- All],
        [?assertNotEqual([], ash_node:log_contains(M, ["joining its cluster"]))
         || M <- [Second, Third]],
        %% Every member's own replica holds the records made before and the pid's last write.
        Replica = fun(N, Id) ->
                          gen_server:call({ash_gen_server_records, N}, {get, R, #{id => Id}}, ?CALL)
                  end,
        [?assert(ash_node:poll(fun() -> Replica(N, by_pid) =:= {ok, #{id => by_pid, n => PidAcked}}
                               end, ?WAIT, 20) orelse Replica(N, by_pid))
         || N <- All],
        [?assertEqual({ok, Rec}, Replica(N, Id))
         || N <- All, {ok, #{id := Id} = Rec} <- Before],
        %% The first node killed: the other two elect a leader and serve every record.
        ash_node:stop(First, "KILL"),
        Rest = tl(All),
        ?assert(ash_node:poll(fun() ->
                                      lists:all(fun(N) ->
                                                        L = maps:get(leader, info(N), undefined),
                                                        lists:member(L, Rest)
                                                end, Rest)
                              end, ?WAIT, 100)),
        [?assertEqual({ok, Rec}, call(N, {get, R, #{id => Id}}))
         || N <- Rest, {ok, #{id := Id} = Rec} <- Before],
        [?assertEqual({ok, #{id => by_pid, n => PidAcked}}, call(N, {get, R, #{id => by_pid}}))
         || N <- Rest],
        ?assertEqual({maps:size(History), 0, 0}, check_history(Rest, R, History)),
        %% The first node again, under its name: it joins as a new member and catches up (and
        %% the others can leave again on SIGTERM: a member that leaves needs a majority of the
        %% membership without it).
        Back = ash_node:start(Config, #{name => maps:get(name, First),
                                        args => ["--join", atom_to_list(hd(Rest))]}),
        put(cv_back, Back),
        await_healthy([Back, Second, Third], 3),
        ?assertEqual({maps:size(History), 0, 0}, check_history(All, R, History))
    after
        [ash_node:stop(M) || M <- [Second, Third | [B || B <- [get(cv_back)], is_map(B)]]]
    end.

%% A node that joins a single node holding many records, SIGKILLed while it receives them (the
%% snapshot), stalls nothing: it was admitted as a learner and is made a voter only once caught
%% up, so the first node alone still has its majority and goes on taking writes. (Made a voter
%% at once, as openraft's own catch-up wait allowed with a short log, the dead joiner would
%% have been half of every quorum.)
a_joiner_killed_while_catching_up_stalls_nothing(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("ck_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    First = ash_node:start(Config, #{name => Base ++ "_first"}),
    FirstNode = ash_node:node(First),
    try
        Joiner = join_a_node_of_200000_records(Config, R, Base, FirstNode),
        timer:sleep(200),
        ash_node:stop(Joiner, "KILL"),
        ?assertMatch({ok, _}, call(FirstNode, {create, R, #{id => after_kill}})),
        ?assertMatch({ok, #{voters := [FirstNode]}}, call(FirstNode, cluster)),
        ?assertMatch({ok, #{c := 200001}},
                     call(FirstNode, {aggregate, R, #{}, [{c, count, id, #{}}]}))
    after
        ash_node:stop(First)
    end.

%% A node stopped (SIGTERM) after the leader added it as a learner but before it received the
%% log that says so asks to be removed all the same: the leader is left with its own member.
a_joiner_stopped_while_catching_up_withdraws(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("cw_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    First = ash_node:start(Config, #{name => Base ++ "_first"}),
    FirstNode = ash_node:node(First),
    try
        Joiner = join_a_node_of_200000_records(Config, R, Base, FirstNode),
        JoinerNode = ash_node:node(Joiner),
        Members = fun() ->
                          case call(FirstNode, cluster) of
                              {ok, #{members := Ms}} -> lists:sort(Ms);
                              _ -> []
                          end
                  end,
        ash_node:await(joiner_added, fun() -> lists:member(JoinerNode, Members()) end, ?WAIT),
        ?assertEqual(0, ash_node:stop(Joiner)),
        ash_node:await(joiner_removed, fun() -> Members() =:= [FirstNode] end, ?WAIT),
        ?assertMatch({ok, #{voters := [FirstNode]}}, call(FirstNode, cluster)),
        ?assertMatch({ok, _}, call(FirstNode, {create, R, #{id => after_stop}})),
        ?assertMatch({ok, #{c := 200001}},
                     call(FirstNode, {aggregate, R, #{}, [{c, count, id, #{}}]}))
    after
        ash_node:stop(First)
    end.

%% Gives the node `FirstNode` 200,000 records of `R` (a snapshot that takes a while to send),
%% then starts a node with `--join` it; returns that node once it is ready.
join_a_node_of_200000_records(Config, R, Base, FirstNode) ->
    ok = call(FirstNode, {define, R, #{primary_key => [id]}}),
    [{ok, _} = call(FirstNode, {bulk_create, R, [#{id => C * 10000 + I, pad => <<0:512>>}
                                                 || I <- lists:seq(1, 10000)], #{}})
     || C <- lists:seq(0, 19)],
    ash_node:start(Config, #{name => Base ++ "_joiner",
                             args => ["--join", atom_to_list(FirstNode)]}).

%% Updates one record through its pid with 1, 2, 3...; tells the last acknowledged number.
pid_writer(Parent, Pid, N, Acked) ->
    receive
        stop -> Parent ! {pid_writer, Acked}
    after 0 ->
            case catch gen_server:call(Pid, {update, #{n => N}}, ?CALL) of
                {ok, #{n := N}} -> pid_writer(Parent, Pid, N + 1, N);
                Other -> ct:fail({pid_write_failed, N, Other})
            end
    end.

%% Two nodes started at the same moment, each with `--join` the other and no other flag, form
%% one cluster (neither is a member yet when the other asks: each says it is deciding, with
%% peers to join).
nodes_started_together_with_join_form_one_cluster(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("tg_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Names = [Base ++ "_a", Base ++ "_b"],
    Self = self(),
    Full = fun(Name) -> Name ++ "@127.0.0.1" end,
    [spawn(fun() ->
                   Self ! {started, Name,
                           catch ash_node:start(Config, #{name => Name,
                                                          args => ["--join", Full(Other)]})}
           end) || {Name, Other} <- lists:zip(Names, lists:reverse(Names))],
    Started = [receive {started, Name, M} -> M after 60000 -> ct:fail({not_started, Name}) end
               || Name <- Names],
    try
        [?assertMatch(#{node := _}, M) || M <- Started],
        await_healthy(Started, 2),
        [A, B] = [ash_node:node(M) || M <- Started],
        ?assertMatch({ok, #{members := [_, _]}}, call(A, cluster)),
        ok = call(A, {define, R, #{primary_key => [id]}}),
        {ok, _} = call(B, {create, R, #{id => 1, v => together}}),
        [?assertEqual({ok, #{id => 1, v => together}}, call(N, {get, R, #{id => 1}})) || N <- [A, B]],
        [?assertNotEqual([], ash_node:log_contains(M, ["joining its cluster"]))
         || M <- Started]
    after
        [ash_node:stop(M) || M <- Started, is_map(M)]
    end.

%% Four members, three of them voting: a voter killed for good gives its vote to the fourth
%% (after the 10 s a voter may stay unreachable), so the cluster is healthy again with three
%% reachable voters and loses nothing; the lost one stays a member, without a vote.
a_lost_voter_gives_its_vote_to_a_spare(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("sp_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    First = ash_node:start(Config, #{name => Base ++ "_a", args => ["--replicas", "3"]}),
    Others = [ash_node:start(Config, #{name => Base ++ "_" ++ L, args => join_args(First)})
              || L <- ["b", "c", "d"]],
    Started = [First | Others],
    try
        await_healthy(Started, 3),
        Nodes = [ash_node:node(M) || M <- Started],
        %% The voters once the leader has settled them (a member joining later than another
        %% that ranks below it takes that one's vote once it has caught up).
        Voters = settled_voters(hd(Nodes)),
        #{leader := Leader} = info(hd(Nodes)),
        [Spare] = Nodes -- Voters,
        [Lost | _] = Voters -- [Leader],
        ok = call(Leader, {define, R, #{primary_key => [id]}}),
        [{ok, _} = call(N, {create, R, #{id => I, v => before}})
         || {I, N} <- lists:zip(lists:seq(1, 4), Nodes)],
        ct:pal("killing the voter ~p; the spare is ~p", [Lost, Spare]),
        [LostMember] = [M || M <- Started, ash_node:node(M) =:= Lost],
        ash_node:stop(LostMember, "KILL"),
        Left = Started -- [LostMember],
        LeftNodes = Nodes -- [Lost],
        %% Writes go on with two of the three voters meanwhile.
        {ok, _} = call(Spare, {create, R, #{id => 5, v => while_lost}}),
        Replaced = fun() ->
                           lists:all(fun(N) ->
                                             case info(N) of
                                                 #{healthy := true, voters := Vs} ->
                                                     lists:sort(Vs) =:= lists:sort(LeftNodes);
                                                 _ -> false
                                             end
                                     end, LeftNodes)
                   end,
        case ash_node:poll(Replaced, 60000, 200) of
            true -> ok;
            false -> ct:fail({spare_never_voted, [{N, info(N)} || N <- LeftNodes]})
        end,
        #{members := Ms} = info(Spare),
        ?assert(lists:member(Lost, Ms)),
        %% The leader's warning (a log line reaches the test a moment after it is written).
        ?assert(ash_node:poll(fun() ->
                                      [] =/= lists:append([ash_node:log_contains(M, ["gave their votes"])
                                                           || M <- Left])
                              end, ?WAIT, 100)),
        {ok, _} = call(Spare, {create, R, #{id => 6, v => after_replaced}}),
        [?assertMatch({ok, #{c := 6}},
                      call(N, {aggregate, R, #{}, [{c, count, id, #{}}]})) || N <- LeftNodes],
        [?assertEqual({ok, #{id => 1, v => before}}, call(N, {get, R, #{id => 1}}))
         || N <- LeftNodes]
    after
        [ash_node:stop(M) || M <- Started]
    end.

%% `--remove-lost-after 4`: a learner cut off from the other members (`{isolate, Others}` of
%% its control process, `--enable-fault-injection`: its connections to them close and neither
%% side can connect again until `heal`) is removed from the cluster once it has been
%% unreachable 4 s. Healed, its log still counts it, but no leader sends it anything: it asks,
%% finds itself removed, drops its copy and joins again as a new member, its own replica then
%% holding every write made while it was cut off.
a_lost_learner_is_removed_and_joins_again_when_back(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("rl_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Args = ["--remove-lost-after", "4", "--enable-fault-injection"],
    First = ash_node:start(Config, #{name => Base ++ "_a", args => ["--replicas", "2" | Args]}),
    Others = [ash_node:start(Config, #{name => Base ++ "_" ++ L, args => join_args(First) ++ Args})
              || L <- ["b", "c"]],
    Started = [First | Others],
    Control = fun(N, Request) -> gen_server:call({ash_gen_server_control, N}, Request, ?CALL) end,
    try
        await_healthy(Started, 2),
        Nodes = [ash_node:node(M) || M <- Started],
        %% Healthy is two reachable voters, not yet the two the leader wants: cut off the
        %% learner only once the leader has stopped moving the votes.
        Voters = settled_voters(hd(Nodes)),
        [Learner] = Nodes -- Voters,
        [LearnerMember] = [M || M <- Started, ash_node:node(M) =:= Learner],
        ok = call(hd(Voters), {define, R, #{primary_key => [id]}}),
        Ids = lists:seq(1, 20),
        [{ok, _} = call(hd(Voters), {create, R, #{id => I, n => 0}}) || I <- Ids],
        ok = Control(Learner, {isolate, Voters}),
        await_removed(Learner, Voters),
        [{ok, _} = call(lists:nth(I rem 2 + 1, Voters), {update, R, #{id => I}, #{n => 1}})
         || I <- Ids],
        ok = Control(Learner, heal),
        await_back(Nodes, Voters),
        Own = fun() ->
                      case gen_server:call({ash_gen_server_records, Learner}, {query, R, #{}}, ?CALL) of
                          {ok, Rs} -> lists:sort([{I, N} || #{id := I, n := N} <- Rs]);
                          Other -> Other
                      end
              end,
        Want = [{I, 1} || I <- Ids],
        ?assert(ash_node:poll(fun() -> Own() =:= Want end, ?WAIT, 200) orelse {Own(), Want}),
        ?assertNotEqual([], ash_node:log_contains(LearnerMember, ["removed this member"]))
    after
        [catch Control(ash_node:node(M), heal) || M <- Started],
        [ash_node:stop(M) || M <- Started]
    end.

%% The same with data directories and `--shards 2`: the learner, removed from group 0 while
%% cut off, drops only group 0's Raft files when it joins again (group 0's directory is the
%% data directory, which also holds `shards` and `group-1`), so, SIGKILLed and started again
%% with its directory and `--shards 2`, it comes back a member and the cluster is healthy.
a_durable_learner_removed_keeps_its_other_groups_files(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("rd_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Dir = fun(L) -> filename:join(?config(priv_dir, Config), Base ++ "_" ++ L) end,
    Args = fun(L) -> ["--shards", "2", "--replicas", "2", "--data-dir", Dir(L),
                      "--remove-lost-after", "4", "--enable-fault-injection"] end,
    Start = fun(L, Extra) ->
                    ash_node:start(Config, #{name => Base ++ "_" ++ L, args => Extra ++ Args(L)})
            end,
    First = Start("a", []),
    Started = [{"a", First} | [{L, Start(L, join_args(First))} || L <- ["b", "c"]]],
    put(rd_nodes, [M || {_, M} <- Started]),
    Control = fun(N, Request) -> gen_server:call({ash_gen_server_control, N}, Request, ?CALL) end,
    try
        await_healthy([M || {_, M} <- Started], 2),
        Nodes = [ash_node:node(M) || {_, M} <- Started],
        Voters = settled_voters(hd(Nodes)),
        [Learner] = Nodes -- Voters,
        [{LL, LearnerMember}] = [P || {_, M} = P <- Started, ash_node:node(M) =:= Learner],
        ok = call(hd(Voters), {define, R, #{primary_key => [id]}}),
        Ids = lists:seq(1, 20),
        [{ok, _} = call(hd(Voters), {create, R, #{id => I}}) || I <- Ids],
        ok = Control(Learner, {isolate, Voters}),
        await_removed(Learner, Voters),
        ok = Control(Learner, heal),
        await_back(Nodes, Voters),
        ?assertNotEqual([], ash_node:wait_log(LearnerMember, ["removed this member"], ?WAIT)),
        ?assert(filelib:is_regular(filename:join(Dir(LL), "shards"))),
        ?assert(filelib:is_dir(filename:join(Dir(LL), "group-1"))),
        %% Started again from its directory, it is a member with --shards 2.
        137 = ash_node:stop(LearnerMember, "KILL"),
        Again = Start(LL, []),
        put(rd_nodes, [Again | [M || {_, M} <- Started, M =/= LearnerMember]]),
        await_healthy(get(rd_nodes), 2),
        [?assertEqual({ok, #{id => I}}, call(Learner, {get, R, #{id => I}})) || I <- Ids]
    after
        [catch Control(ash_node:node(M), heal) || M <- get(rd_nodes)],
        [ash_node:stop(M) || M <- get(rd_nodes)]
    end.

%% Waits until every one of `Voters` no longer counts `Learner` as a member.
await_removed(Learner, Voters) ->
    Members = fun() -> [begin #{members := Ms} = info(V), lists:sort(Ms) end || V <- Voters] end,
    Removed = fun() -> lists:all(fun(Ms) -> not lists:member(Learner, Ms) end, Members()) end,
    ?assert(ash_node:poll(Removed, ?WAIT, 200) orelse Members()).

%% Waits until every one of `Voters` is healthy and counts exactly `Nodes` as members.
await_back(Nodes, Voters) ->
    Back = fun() ->
                   lists:all(fun(V) ->
                                     case info(V) of
                                         #{healthy := true, members := Ms} ->
                                             lists:sort(Ms) =:= lists:sort(Nodes);
                                         _ -> false
                                     end
                             end, Voters)
           end,
    ?assert(ash_node:poll(Back, ?WAIT, 200) orelse [info(V) || V <- Voters]).

%% One voter and one caught-up learner (`--replicas 1`): the learner is SIGKILLed and the voter
%% SIGTERMed at once. The voter would hand its vote to the learner before leaving, but a lost
%% learner can never acknowledge that: the voter stops as the last member instead (or, should
%% it not have seen the loss yet, gives up at its budget) and exits 0 within its
%% --shutdown-timeout, never hanging until it is killed.
the_last_voter_stops_in_time_when_its_heir_is_lost(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("hr_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    First = ash_node:start(Config, #{name => Base ++ "_a",
                                     args => ["--replicas", "1", "--shutdown-timeout", "4"]}),
    Second = ash_node:start(Config, #{name => Base ++ "_b",
                                      args => ["--replicas", "1", "--shutdown-timeout", "4"
                                               | join_args(First)]}),
    try
        await_healthy([First, Second], 1),
        %% Whichever of the two rendezvous hashing ranks first for group 0 votes (the vote
        %% moves to the second once it has caught up, when it ranks first).
        [V] = settled_voters(ash_node:node(First)),
        [Voter, Learner] = case ash_node:node(First) of
                               V -> [First, Second];
                               _ -> [Second, First]
                           end,
        L = ash_node:node(Learner),
        ?assertMatch(#{voters := [V]}, info(L)),
        ok = call(V, {define, R, #{primary_key => [id]}}),
        [{ok, _} = call(V, {create, R, #{id => I}}) || I <- lists:seq(1, 20)],
        %% The learner holds them (it is caught up, so the voter would pick it as its heir).
        {ok, #{c := 20}} = call(L, {aggregate, R, #{}, [{c, count, id, #{}}]}),
        137 = ash_node:stop(Learner, "KILL"),
        ?assertEqual(0, ash_node:stop(Voter)),
        ?assertNotEqual([], ash_node:log_contains(Voter, ["the last voting member"]) ++
                            ash_node:log_contains(Voter, ["could not leave the cluster in time"]))
    after
        [ash_node:stop(M) || M <- [First, Second]]
    end.

%% `--replicas 2` over three members: two voters, whichever rendezvous hashing ranks first.
%% When those are the joiners, the change of voters leaves the member that formed the cluster
%% (and led it alone) leading without a vote, which openraft allows, and the voters, hearing
%% from it, never elect one of theirs (a single voter would). It asks a voter to stand for
%% election, and a voter leads (the cluster is healthy only then). Started again under fresh
%% names until the founder ranks last (one in three).
a_leader_without_a_vote_hands_the_lead_to_a_voter(Config) ->
    R = ?config(res, Config),
    {Founder, Members, Voters} = founder_without_a_vote(Config, 20),
    Nodes = [ash_node:node(M) || M <- Members],
    try
        Led = fun() ->
                      lists:all(fun(#{leader := L, voters := Vs, healthy := true}) ->
                                        lists:sort(Vs) =:= Voters andalso lists:member(L, Vs);
                                   (_) -> false
                                end, [info(N) || N <- Nodes])
                      andalso length(lists:usort([L || #{leader := L} <- [info(N) || N <- Nodes]]))
                              =:= 1
              end,
        ?assert(ash_node:poll(Led, ?WAIT, 100) orelse [info(N) || N <- Nodes]),
        ?assertNotEqual([], ash_node:wait_log(Founder, ["asking a voter to stand for election"],
                                              ?WAIT)),
        F = ash_node:node(Founder),
        ok = call(F, {define, R, #{primary_key => [id]}}),
        [{ok, _} = call(F, {create, R, #{id => I}}) || I <- lists:seq(1, 10)],
        [?assertMatch({ok, #{c := 10}}, call(N, {aggregate, R, #{}, [{c, count, id, #{}}]}))
         || N <- Nodes],
        #{leader := Leader} = info(F),
        ?assert(lists:member(Leader, Voters))
    after
        [ash_node:stop(M) || M <- Members]
    end.

%% Three members with `--replicas 2` whose voters, once settled, are the two joiners:
%% {Founder, Members, SortedVoters}.
founder_without_a_vote(_Config, 0) ->
    ct:fail(the_founder_always_ranked_among_the_voters);
founder_without_a_vote(Config, Tries) ->
    Base = lists:flatten(io_lib:format("lv_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    First = ash_node:start(Config, #{name => Base ++ "_a", args => ["--replicas", "2"]}),
    Others = [ash_node:start(Config, #{name => Base ++ "_" ++ L, args => join_args(First)})
              || L <- ["b", "c"]],
    Members = [First | Others],
    F = ash_node:node(First),
    Joiners = lists:sort([ash_node:node(M) || M <- Others]),
    Ranked = ash_node:poll(fun() ->
                                   case info(F) of
                                       #{members := [_, _, _], voters := [_, _]} -> true;
                                       _ -> false
                                   end
                           end, ?WAIT, 100),
    ?assert(Ranked orelse info(F)),
    case lists:sort(settled_voters(F)) of
        Joiners ->
            {First, Members, Joiners};
        _ ->
            [ash_node:stop(M) || M <- Members],
            founder_without_a_vote(Config, Tries - 1)
    end.

%% `--replicas` is the cluster's: a member joining without one takes it (so every member
%% agrees on how many vote and when the cluster is healthy, whoever leads); one joining with
%% another exits non-zero, saying why, and is not admitted.
a_joining_member_takes_the_clusters_replicas(Config) ->
    Base = lists:flatten(io_lib:format("rp_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    First = ash_node:start(Config, #{name => Base ++ "_a", args => ["--replicas", "1"]}),
    Second = ash_node:start(Config, #{name => Base ++ "_b", args => join_args(First)}),
    try
        await_healthy([First, Second], 1),
        [A, B] = [ash_node:node(M) || M <- [First, Second]],
        %% One voter, whichever of the two rendezvous hashing ranks first for group 0 (the
        %% leader may move the vote to B once B has caught up): both members agree on it.
        [V] = settled_voters(A),
        ?assert(lists:member(V, [A, B])),
        Agreed = fun() ->
                         lists:all(fun(#{replicas := 1, healthy := true, voters := [W]}) -> W =:= V;
                                      (_) -> false
                                   end, [info(N) || N <- [A, B]])
                 end,
        ?assert(ash_node:poll(Agreed, ?WAIT, 100) orelse {info(A), info(B)}),
        ?assertNotEqual([], ash_node:log_contains(Second, ["replicas=1"])),
        {Status, Out} = ash_node:run_bin(["start", "--name", Base ++ "_c@127.0.0.1",
                                          "--cookie", atom_to_list(erlang:get_cookie()),
                                          "--replicas", "2", "--join", atom_to_list(A)],
                                         60000),
        ct:log("~p: ~s", [Status, Out]),
        ?assertNotEqual(0, Status),
        ?assertNotEqual(timeout, Status),
        ?assertNotEqual(nomatch, binary:match(Out, <<"--replicas 2 differs from the cluster's">>)),
        ?assertMatch(#{members := [_, _]}, info(A))
    after
        [ash_node:stop(M) || M <- [First, Second]]
    end.

%% Two of three members SIGKILLed (in memory: they can only come back empty, under new ids
%% that only a leader could admit): the survivor has no majority, so no leader, for ever.
%% `ash-gen-server recover` forms the group again from its copy: refused while the group has
%% a leader (nothing changes), then the survivor leads alone with every record and its last
%% value, applies a write retried with its request id once, and takes writes; the two started
%% again join it and catch up.
a_lost_majority_is_recovered_from_the_survivors_copy(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("lm_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    First = ash_node:start(Config, #{name => Base ++ "_a"}),
    Others = [ash_node:start(Config, #{name => Base ++ "_" ++ L, args => join_args(First)})
              || L <- ["b", "c"]],
    Cookie = atom_to_list(erlang:get_cookie()),
    Recover = fun(Node) ->
                      ash_node:run_bin(["recover", "--node", atom_to_list(Node),
                                        "--cookie", Cookie], 90000)
              end,
    Back = fun(M, Peer) -> ash_node:start(Config, #{name => maps:get(name, M),
                                                    args => join_args(Peer)})
           end,
    put(lm_started, [First | Others]),
    try
        await_healthy([First | Others], 3),
        Nodes = [ash_node:node(M) || M <- [First | Others]],
        ok = call(hd(Nodes), {define, R, #{primary_key => [id]}}),
        Ids = lists:seq(1, 30),
        [{ok, _} = call(lists:nth(I rem 3 + 1, Nodes), {create, R, #{id => I, n => I}})
         || I <- Ids],
        [{ok, _} = call(lists:nth((I + 1) rem 3 + 1, Nodes), {update, R, #{id => I}, #{n => -I}})
         || I <- Ids],
        %% The survivor is a follower; the leader and the other follower are lost.
        #{leader := Leader} = info(hd(Nodes)),
        [S | _] = Nodes -- [Leader],
        [Survivor] = [M || M <- [First | Others], ash_node:node(M) =:= S],
        Lost = [M || M <- [First | Others], M =/= Survivor],
        %% A write with a request id, acknowledged before the loss.
        Inc = {request_id, erlang:unique_integer([positive]),
               {update, R, #{id => 1}, #{}, #{atomics => [{n, {'+', {ref, n}, {value, 1}}}]}}},
        ?assertEqual({ok, #{id => 1, n => 0}}, call(Leader, Inc)),
        {Status0, Out0} = Recover(S),
        ct:log("recover on a healthy group: ~p ~s", [Status0, Out0]),
        ?assertNotEqual(0, Status0),
        ?assertNotEqual(nomatch, binary:match(Out0, <<"has a leader">>)),
        ?assertMatch(#{leader := Leader, voters := [_, _, _]}, info(S)),
        [137 = ash_node:stop(M, "KILL") || M <- Lost],
        %% Refused until the group has had no leader for a while, then done.
        Recovered = fun() ->
                            {Status, Out} = Recover(S),
                            ct:log("recover: ~p ~s", [Status, Out]),
                            Status =:= 0
                    end,
        ?assert(ash_node:poll(Recovered, ?WAIT, 1000)),
        ?assertNotEqual([], ash_node:wait_log(Survivor, ["formed the group again"], ?WAIT)),
        ?assertMatch(#{leader := S, members := [S], voters := [S], healthy := true}, info(S)),
        Want = [#{id => I, n => case I of 1 -> 0; _ -> -I end} || I <- Ids],
        ?assertEqual({ok, Want}, call(S, {query, R, #{sort => [{id, asc}]}})),
        %% The group formed again remembers the request ids: the retry is applied once.
        ?assertEqual({ok, #{id => 1, n => 0}}, call(S, Inc)),
        ?assertEqual({ok, #{id => 1, n => 0}}, call(S, {get, R, #{id => 1}})),
        [?assertEqual({ok, #{id => I, n => I * 10}},
                      call(S, {update, R, #{id => I}, #{n => I * 10}})) || I <- Ids],
        %% The lost two come back (empty, new ids) and join the survivor's group.
        Again = [Back(M, Survivor) || M <- Lost],
        put(lm_started, [Survivor | Again]),
        await_healthy([Survivor | Again], 3),
        [?assertEqual({ok, [#{id => I, n => I * 10} || I <- Ids]},
                      call(ash_node:node(M), {query, R, #{sort => [{id, asc}]}}))
         || M <- Again],
        %% Now the group has a leader and a majority again: refused.
        {Status1, _} = Recover(S),
        ?assertNotEqual(0, Status1)
    after
        [ash_node:stop(M) || M <- get(lm_started)]
    end.

%% Whether a process is registered as Name on node N (a monitor on the name answers noproc at
%% once when none is).
registered(N, Name) ->
    Ref = erlang:monitor(process, {Name, N}),
    receive
        {'DOWN', Ref, process, _, noproc} -> false
    after 2000 ->
            erlang:demonitor(Ref, [flush]),
            true
    end.

%% The voters once the leader has settled them: the same in two reads 2.5 s apart (it moves
%% them at most once a second), within ?WAIT.
settled_voters(Node) ->
    settled_voters(Node, ?WAIT div 2500).

settled_voters(Node, 0) ->
    ct:fail({voters_never_settled, info(Node)});
settled_voters(Node, Tries) ->
    #{voters := Before} = info(Node),
    timer:sleep(2500),
    #{voters := After} = info(Node),
    case lists:sort(After) =:= lists:sort(Before) of
        true -> After;
        false -> settled_voters(Node, Tries - 1)
    end.
