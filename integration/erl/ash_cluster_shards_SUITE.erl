%% A cluster whose records are split into shards (`start --shards 4`: four Raft groups over
%% three members, docs/OPERATIONS.md "Clustering"): every member answers every request as a
%% single node holding every record would. A single node is the reference: the same records
%% are created on both, then every get, query (filter, sort, offset, limit, select, partitions),
%% aggregate (grouped too), update_where and destroy_where (with and without a limit), bulk_create
%% and info through each member give the reference's reply and leave the same records. A
%% resource with identities keeps its records in one shard: a duplicate identity value fails as
%% on a single node. The `cluster` reply names the shards and each one's leader. Last, a member
%% is SIGKILLed: the other two still read every record and take writes.
-module(ash_cluster_shards_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-import(ash_cluster_lib, [call/2, info/1]).

%% Bounded waits: generous, they only stop a broken run.
-define(WAIT, 30000).

all() ->
    [every_group_has_a_leader, records_equal_a_single_node, writes_where_equal_a_single_node,
     bulk_create_equals_a_single_node, identities_hold_in_one_shard,
     record_pids_and_expiry_handlers_in_every_group,
     a_member_joining_with_other_shards_exits, sigterm_leaves_every_group,
     a_killed_member_loses_no_record, a_groups_raft_core_stopping_stops_the_member,
     a_group_its_only_member_lost_forms_again,
     every_group_of_a_lost_durable_majority_is_recovered].

init_per_suite(Config) ->
    Base = lists:flatten(io_lib:format("sh_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    [First | Rest] = [Base ++ "_" ++ L || L <- ["a", "b", "c"]],
    Ports = [free_port() || _ <- [First | Rest]],
    Metrics = fun(Port) -> ["--metrics-addr", "127.0.0.1:" ++ integer_to_list(Port)] end,
    A = ash_node:start(Config, #{name => First,
                                 args => ["--shards", "4", "--replicas", "3"]
                                     ++ Metrics(hd(Ports))}),
    Others = [ash_node:start(Config, #{name => N,
                                       args => ["--shards", "4", "--join",
                                                atom_to_list(ash_node:node(A))]
                                           ++ Metrics(Port)})
              || {N, Port} <- lists:zip(Rest, tl(Ports))],
    Members = [A | Others],
    persistent_term:put({?MODULE, metrics_ports}, Ports),
    await_every_group(Members),
    Single = ash_node:start(Config, #{tag => "sh_single"}),
    persistent_term:put({?MODULE, members}, Members),
    persistent_term:put({?MODULE, single}, Single),
    Config.

end_per_suite(_Config) ->
    [ash_node:stop(M) || M <- members()],
    ash_node:stop(persistent_term:get({?MODULE, single})),
    persistent_term:erase({?MODULE, members}),
    ok.

members() -> persistent_term:get({?MODULE, members}).

free_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(S),
    gen_tcp:close(S),
    Port.

%% The Prometheus text of each first member started with the suite, over real HTTP.
scrape_all() ->
    {ok, _} = application:ensure_all_started(inets),
    [begin
         Url = "http://127.0.0.1:" ++ integer_to_list(Port) ++ "/metrics",
         {ok, {{_, 200, _}, _, Body}} = httpc:request(get, {Url, []}, [{timeout, 5000}], []),
         Body
     end || Port <- persistent_term:get({?MODULE, metrics_ports})].

%% The value of the gauge line `Name{Labels} Value` in a Prometheus text (undefined if absent).
gauge_value(Body, Name, Labels) ->
    Prefix = Name ++ "{" ++ Labels ++ "} ",
    case [L || L <- string:split(Body, "\n", all), lists:prefix(Prefix, L)] of
        [Line] -> list_to_float_or_int(string:trim(lists:nthtail(length(Prefix), Line)));
        [] -> undefined
    end.

list_to_float_or_int(S) ->
    case string:to_float(S) of
        {F, []} -> F;
        _ -> list_to_integer(S)
    end.

member_nodes() -> [ash_node:node(M) || M <- members()].
single() -> ash_node:node(persistent_term:get({?MODULE, single})).

init_per_testcase(TC, Config) ->
    [{res, ash_node:uniq_res(TC)} | Config].

end_per_testcase(_, _) -> ok.

%% Every member sees 4 groups, each with a leader, every group healthy.
await_every_group(Members) ->
    Nodes = [ash_node:node(M) || M <- Members],
    N = length(Nodes),
    Ready = fun() ->
                    lists:all(fun(Node) ->
                                      case info(Node) of
                                          #{healthy := true, shards := 4, groups := Gs,
                                            voters := Vs} ->
                                              length(Vs) =:= N andalso length(Gs) =:= 4
                                                  andalso lists:all(
                                                            fun(#{leader := L}) ->
                                                                    L =/= undefined
                                                            end, Gs);
                                          _ -> false
                                      end
                              end, Nodes)
            end,
    case ash_node:poll(Ready, ?WAIT, 100) of
        true -> ok;
        false -> ct:fail({not_healthy, [{Node, info(Node)} || Node <- Nodes]})
    end.

define_both(R, Opts) ->
    ok = call(hd(member_nodes()), {define, R, Opts}),
    ok = call(single(), {define, R, Opts}).

records(N) ->
    Teams = [<<"a">>, <<"b">>, <<"c">>, nil],
    [maps:filter(fun(_, V) -> V =/= skip end,
                 #{id => I, n => I rem 7, team => lists:nth(I rem 4 + 1, Teams),
                   name => iolist_to_binary(io_lib:format("r~3..0b", [I])),
                   score => case I rem 11 of 0 -> skip; _ -> (I * 37) rem 101 end,
                   note => case I rem 5 of 0 -> nil; _ -> <<"x">> end})
     || I <- lists:seq(1, N)].

%% Creates the records one by one, through the members in turn, and on the single node.
create_both(R, Records) ->
    Nodes = member_nodes(),
    [begin
         Node = lists:nth(I rem length(Nodes) + 1, Nodes),
         {ok, Rec} = call(Node, {create, R, Rec}),
         {ok, _} = call(single(), {create, R, Rec})
     end || {I, Rec} <- lists:zip(lists:seq(1, length(Records)), Records)],
    ok.

all_records(Node, R) ->
    {ok, Rs} = call(Node, {query, R, #{sort => [{id, asc}]}}),
    Rs.

%% ---------------------------------------------------------------------------------------------

every_group_has_a_leader(_Config) ->
    Nodes = member_nodes(),
    [begin
         I = info(Node),
         ct:log("~p: ~p", [Node, I]),
         ?assertMatch(#{shards := 4, healthy := true, replicas := 3, self := Node}, I),
         ?assertEqual(lists:sort(Nodes), lists:sort(maps:get(members, I))),
         Groups = maps:get(groups, I),
         ?assertEqual([0, 1, 2, 3], [G || #{group := G} <- Groups]),
         [?assert(lists:member(L, Nodes)) || #{leader := L} <- Groups],
         [?assertEqual(true, H) || #{healthy := H} <- Groups]
     end || Node <- Nodes],
    pong = call(hd(Nodes), ping),
    {ok, #{records := _, record_pids := _}} = call(hd(Nodes), stats),
    %% Each group's gauges, labelled with it: every member holds groups 1-3 (3 members, 3
    %% replicas) and exactly one leads each (sampled once a second: polled).
    Label = fun(G) -> "group=\"" ++ integer_to_list(G) ++ "\"" end,
    Gauges = fun() ->
                     Bodies = scrape_all(),
                     [{G, [gauge_value(B, "ash_gen_server_cluster_group_holding", Label(G))
                           || B <- Bodies],
                       lists:sum([case gauge_value(B, "ash_gen_server_cluster_group_leader",
                                                   Label(G)) of
                                      undefined -> 0;
                                      V -> V
                                  end || B <- Bodies])}
                      || G <- [1, 2, 3]]
             end,
    Want = [{G, [1, 1, 1], 1} || G <- [1, 2, 3]],
    Num = fun(undefined) -> -1; (V) -> round(V) end,
    Same = fun(Got) -> [{G, [Num(H) || H <- Hs], Num(L)} || {G, Hs, L} <- Got] =:= Want end,
    ?assert(ash_node:poll(fun() -> Same(Gauges()) end, ?WAIT, 500) orelse Gauges()).

records_equal_a_single_node(Config) ->
    R = ?config(res, Config),
    define_both(R, #{primary_key => [id]}),
    Records = records(300),
    create_both(R, Records),
    S = single(),
    Nodes = member_nodes(),
    %% Every get.
    [?assertEqual({I, call(S, {get, R, #{id => I}})}, {I, call(N, {get, R, #{id => I}})})
     || I <- lists:seq(0, 301), N <- Nodes],
    {ok, #{count := 300}} = call(S, {info, R}),
    [?assertMatch({ok, #{count := 300, primary_key := [id]}}, call(N, {info, R})) || N <- Nodes],
    %% The records are spread over the four groups (each group's router answers for its own).
    Counts = [begin
                  Router = list_to_atom("ash_gen_server_group_" ++ integer_to_list(G)),
                  {ok, #{count := C}} = gen_server:call({Router, hd(Nodes)}, {info, R}, 20000),
                  C
              end || G <- lists:seq(0, 3)],
    ct:log("records per group: ~p", [Counts]),
    ?assertEqual(300, lists:sum(Counts)),
    [?assert(C > 30) || C <- Counts],
    Queries = [#{sort => [{id, asc}]},
               #{filter => {gte, n, 3}, sort => [{score, desc}, {id, asc}], limit => 17,
                 offset => 5},
               #{sort => [{team, asc_nils_first}, {n, desc}, {id, asc}], offset => 290},
               #{filter => {'or', {is_nil, score}, {in, team, [<<"b">>]}},
                 sort => [{score, desc_nils_last}, {id, asc}], limit => 40, select => [n]},
               #{filter => {'and', {gt, score, 50}, {'not', {eq, team, nil}}}, limit => 10,
                 sort => [{id, desc}]},
               #{filter => {eq, note, nil}, sort => [{name, asc}], offset => 20, limit => 20}],
    %% Without a sort the order is unspecified: compared sorted.
    Unsorted = [#{}, #{filter => {lt, n, 2}}, #{filter => {eq, team, <<"a">>}, select => [id]}],
    Aggs = [{c, count, nil, #{}}, {cs, count, score, #{}}, {s, sum, score, #{}},
            {a, avg, score, #{}}, {mn, min, score, #{}}, {mx, max, team, #{}},
            {f, first, score, #{}}, {l, list, id, #{}}, {u, count, team, #{uniq => true}},
            {e, exists, nil, #{}}],
    Check = fun(Req, Norm) ->
                    Want = Norm(call(S, Req)),
                    ?assertMatch({ok, _}, Want),
                    [?assertEqual({Req, Want}, {Req, Norm(call(N, Req))}) || N <- Nodes]
            end,
    Same = fun(X) -> X end,
    Sorted = fun({ok, L}) when is_list(L) -> {ok, lists:sort(L)}; (X) -> X end,
    [Check({query, R, Q}, Same) || Q <- Queries],
    [Check({query, R, Q}, Sorted) || Q <- Unsorted],
    [Check({aggregate, R, Q, Aggs}, Same) || Q <- Queries],
    [Check({aggregate, R, Q, Aggs, #{group_by => team}}, Same) || Q <- Queries],
    %% Partitioned queries (the partitions' order and content).
    SortedParts = fun({ok, Ps}) -> {ok, lists:sort(Ps)}; (X) -> X end,
    [Check({query, R, Q, #{partition_by => team}}, SortedParts)
     || Q <- [#{sort => [{id, asc}], limit => 3}, #{filter => {gt, n, 2}, sort => [{n, desc},
                                                                                 {id, asc}]}]],
    Check({query, R, #{sort => [{id, desc}], limit => 2},
           #{partition_by => n, partitions => [{low, [0, 1]}, {high, [5, 6]}]}}, Same),
    ok.

writes_where_equal_a_single_node(Config) ->
    R = ?config(res, Config),
    define_both(R, #{primary_key => [id]}),
    create_both(R, records(120)),
    S = single(),
    Nodes = member_nodes(),
    Writes = [{update_where, R, #{filter => {eq, team, <<"a">>}, sort => [{id, asc}]},
               #{set => #{flag => true}}},
              {update_where, R, #{filter => {gt, n, 3}, sort => [{score, desc}, {id, asc}],
                                  limit => 7},
               #{atomics => [{n, {'+', {ref, n}, {value, 10}}}]}},
              {update_where, R, #{filter => {eq, team, <<"b">>}, limit => 5, sort => [{id, asc}]},
               #{set => #{flag => false}, return => count}},
              {destroy_where, R, #{filter => {eq, n, 0}, sort => [{id, asc}], limit => 4}},
              {destroy_where, R, #{filter => {eq, team, nil}, sort => [{id, asc}]}},
              {destroy_where, R, #{filter => {eq, n, 5}}, #{return => count}}],
    %% Each write through one member (in turn), the same on the single node: same replies,
    %% then the same records everywhere.
    [begin
         Node = lists:nth(I rem length(Nodes) + 1, Nodes),
         Want = call(S, W),
         ?assertMatch({ok, _}, Want),
         ?assertEqual({W, Want}, {W, call(Node, W)}),
         All = all_records(S, R),
         [?assertEqual({W, N, All}, {W, N, all_records(N, R)}) || N <- Nodes]
     end || {I, W} <- lists:zip(lists:seq(1, length(Writes)), Writes)],
    {ok, #{count := Count}} = call(S, {info, R}),
    [?assertMatch({ok, #{count := Count}}, call(N, {info, R})) || N <- Nodes],
    %% clear: counts added up over the shards.
    ?assertEqual(call(S, {clear, R}), call(hd(Nodes), {clear, R})),
    [?assertEqual([], all_records(N, R)) || N <- Nodes].

bulk_create_equals_a_single_node(Config) ->
    R = ?config(res, Config),
    define_both(R, #{primary_key => [id]}),
    S = single(),
    Nodes = member_nodes(),
    Records = records(60),
    %% The reply in the records' order, duplicates and bad records in place.
    Bulk = {bulk_create, R, Records ++ [#{id => 3, n => 1}, #{id => 61}], #{}},
    ?assertEqual(call(S, Bulk), call(lists:last(Nodes), Bulk)),
    Bad = {bulk_create, R, [#{id => 70}, not_a_map], #{}},
    ?assertMatch({error, {bad_request, _}}, call(S, Bad)),
    ?assertEqual(call(S, Bad), call(hd(Nodes), Bad)),
    Bulk2 = {bulk_create, R, [#{id => 3, n => 1}, #{id => 62}, #{id => 63}], #{}},
    Want = call(S, Bulk2),
    ?assertMatch({ok, [{error, _}, {ok, _}, {ok, _}]}, Want),
    ?assertEqual(Want, call(hd(Nodes), Bulk2)),
    Upsert = {bulk_create, R, [#{id => 3, n => 99}, #{id => 64, n => 1}],
              #{upsert => true}},
    ?assertEqual(call(S, Upsert), call(hd(tl(Nodes)), Upsert)),
    [?assertEqual(all_records(S, R), all_records(N, R)) || N <- Nodes],
    %% all_or_nothing over several shards: refused as the single node refuses it (the first
    %% refused record named, a key taken late in the batch and a key missing earlier, in
    %% other shards than most records), and then no record of the batch exists anywhere ...
    Taken = [#{id => I} || I <- lists:seq(100, 120)] ++ [#{id => 3}],
    Missing = [#{id => I} || I <- lists:seq(130, 150)] ++ [#{n => 1}, #{id => 4}],
    [begin
         Whole = {bulk_create, R, Batch, #{all_or_nothing => true}},
         Refused = call(S, Whole),
         ?assertMatch({error, {record, _, _}}, Refused),
         ?assertEqual(Refused, call(lists:nth(I, Nodes), Whole))
     end || {I, Batch} <- [{1, Taken}, {2, Missing}]],
    [?assertEqual(all_records(S, R), all_records(N, R)) || N <- Nodes],
    [?assertEqual({error, not_found}, call(N, {get, R, #{id => Id}}))
     || N <- Nodes, Id <- [100, 120, 130, 150]],
    %% ... and accepted whole, in order, when nothing is refused.
    Fine = {bulk_create, R, [#{id => I, n => I} || I <- lists:seq(200, 240)],
            #{all_or_nothing => true}},
    ?assertEqual(call(S, Fine), call(lists:last(Nodes), Fine)),
    [?assertEqual(all_records(S, R), all_records(N, R)) || N <- Nodes],
    ok.

identities_hold_in_one_shard(Config) ->
    R = ?config(res, Config),
    Def = #{primary_key => [id], identities => [{email, [email]}]},
    define_both(R, Def),
    S = single(),
    [A, B, C] = member_nodes(),
    {ok, _} = call(S, {create, R, #{id => 1, email => <<"a@x">>}}),
    {ok, _} = call(A, {create, R, #{id => 1, email => <<"a@x">>}}),
    Want = call(S, {create, R, #{id => 2, email => <<"a@x">>}}),
    ?assertMatch({error, _}, Want),
    ?assertEqual(Want, call(B, {create, R, #{id => 2, email => <<"a@x">>}})),
    ?assertEqual(call(S, {get, R, #{id => 2}}), call(C, {get, R, #{id => 2}})),
    %% Upsert by identity.
    Up = {upsert, R, #{id => 3, email => <<"a@x">>, n => 1}, #{keys => [email]}},
    ?assertEqual(call(S, Up), call(C, Up)),
    %% all_or_nothing works for a resource with identities (one shard), and fails whole.
    Whole = {bulk_create, R, [#{id => I, email => integer_to_binary(I)} || I <- lists:seq(10, 30)]
             ++ [#{id => 31, email => <<"a@x">>}], #{all_or_nothing => true}},
    ?assertEqual(call(S, Whole), call(A, Whole)),
    Whole2 = {bulk_create, R, [#{id => I, email => integer_to_binary(I)} || I <- lists:seq(10, 30)],
              #{all_or_nothing => true}},
    ?assertEqual(call(S, Whole2), call(B, Whole2)),
    [?assertEqual(all_records(S, R), all_records(N, R)) || N <- member_nodes()],
    ok.

%% Record pids are their group's (calls go through its log); an expiry handler subscribed on
%% one member gets one notice for each record of any group, and keep_alive casts reach the
%% record's group.
record_pids_and_expiry_handlers_in_every_group(Config) ->
    R = ?config(res, Config),
    [A, B, C] = Nodes = member_nodes(),
    ok = call(A, {define, R, #{primary_key => [id]}}),
    Ids = lists:seq(1, 24),
    [{ok, _} = call(B, {create, R, #{id => I, n => 0}}) || I <- Ids],
    [begin
         {ok, Pid} = call(lists:nth(I rem 3 + 1, Nodes), {whereis, R, #{id => I}}),
         ?assertMatch({ok, #{id := I, n := 0}}, gen_server:call(Pid, get, 20000)),
         ?assertMatch({ok, #{id := I, n := 1}}, gen_server:call(Pid, {update, #{n => 1}}, 20000))
     end || I <- Ids],
    [?assertMatch({ok, #{n := 1}}, call(N, {get, R, #{id => I}})) || I <- Ids, N <- Nodes],
    %% Expiry notices from every group.
    E = ash_node:uniq_res(expiring),
    ok = call(A, {define, E, #{primary_key => [id], inactivity_timeout => 1500}}),
    ok = call(C, {subscribe, [E]}),
    [{ok, _} = call(A, {create, E, #{id => I}}) || I <- Ids],
    %% keep_alive casts (through B) keep the first half alive a little longer: cast to its group.
    [gen_server:cast({ash_gen_server, B}, {keep_alive, E, #{id => I}}) || I <- lists:seq(1, 12)],
    Notices = fun Loop(Acc) ->
                      case length(Acc) of
                          24 -> Acc;
                          _ ->
                              receive
                                  {ash_gen_server, expired, #{primary_key := #{id := I}}} ->
                                      ok = call(C, {destroy, E, #{id => I}}),
                                      Loop([I | Acc])
                              after ?WAIT -> Acc
                              end
                      end
              end([]),
    ?assertEqual(Ids, lists:sort(Notices)),
    receive
        {ash_gen_server, expired, _} = Again -> ct:fail({second_notice, Again})
    after 2000 -> ok
    end,
    ok = call(C, unsubscribe),
    [?assertMatch({ok, #{count := 0}}, call(N, {info, E})) || N <- Nodes].

%% A node started with another --shards than the cluster's exits non-zero, saying why.
a_member_joining_with_other_shards_exits(_Config) ->
    Name = lists:flatten(io_lib:format("sh_other_~s_~b@127.0.0.1",
                                       [os:getpid(), ash_node:uniq_int()])),
    {Status, Out} = ash_node:run_bin(["start", "--name", Name,
                                      "--cookie", atom_to_list(erlang:get_cookie()),
                                      "--shards", "2", "--join", atom_to_list(hd(member_nodes()))],
                                     60000),
    ct:log("~p: ~s", [Status, Out]),
    ?assertNotEqual(0, Status),
    ?assertNotEqual(timeout, Status),
    ?assertNotEqual(nomatch, binary:match(Out, <<"differs from the cluster's">>)),
    %% The cluster did not admit it.
    ?assertEqual(3, length(maps:get(members, info(hd(member_nodes()))))).

%% A fourth member joins every group; SIGTERM makes it leave every group and exit 0.
sigterm_leaves_every_group(Config) ->
    [A | _] = member_nodes(),
    D = ash_node:start(Config, #{tag => "sh_d",
                                 args => ["--shards", "4", "--join", atom_to_list(A)]}),
    DNode = ash_node:node(D),
    In = fun() ->
                 case info(DNode) of
                     #{members := Ms, groups := Gs, healthy := true} ->
                         length(Ms) =:= 4
                             andalso lists:all(fun(#{leader := L}) -> L =/= undefined end, Gs);
                     _ -> false
                 end
         end,
    ?assert(ash_node:poll(In, ?WAIT, 100)),
    %% It serves requests like the others.
    R = ?config(res, Config),
    ok = call(DNode, {define, R, #{primary_key => [id]}}),
    [{ok, _} = call(DNode, {create, R, #{id => I}}) || I <- lists:seq(1, 20)],
    ?assertMatch({ok, #{count := 20}}, call(A, {info, R})),
    ?assertEqual(0, ash_node:stop(D)),
    Left = fun() -> length(maps:get(members, info(A))) =:= 3 end,
    ?assert(ash_node:poll(Left, ?WAIT, 100)),
    await_every_group(members()).

a_killed_member_loses_no_record(Config) ->
    R = ?config(res, Config),
    define_both(R, #{primary_key => [id]}),
    Records = records(100),
    create_both(R, Records),
    [Dead | Alive] = members(),
    ash_node:stop(Dead, "KILL"),
    persistent_term:put({?MODULE, members}, Alive),
    Nodes = [ash_node:node(M) || M <- Alive],
    %% Every record readable from the other two, within a bounded wait.
    Readable = fun() ->
                       lists:all(fun(#{id := I} = Rec) ->
                                         lists:all(fun(N) ->
                                                           call(N, {get, R, #{id => I}})
                                                               =:= {ok, Rec}
                                                   end, Nodes)
                                 end, Records)
               end,
    ?assert(ash_node:poll(Readable, ?WAIT, 200)),
    %% Writes succeed through both, in every shard.
    Written = fun() ->
                      lists:all(fun(I) ->
                                        N = lists:nth(I rem 2 + 1, Nodes),
                                        case call(N, {update, R, #{id => I}, #{n => -1}}) of
                                            {ok, #{n := -1}} -> true;
                                            _ -> false
                                        end
                                end, lists:seq(1, 100))
              end,
    ?assert(ash_node:poll(Written, ?WAIT, 200)),
    {ok, _} = call(hd(Nodes), {create, R, #{id => 1000}}),
    ?assertMatch({ok, #{count := 101}}, call(lists:last(Nodes), {info, R})),
    ?assertMatch({ok, [_ | _]}, call(hd(Nodes), {query, R, #{filter => {eq, n, -1}}})),
    %% Two of three voters cannot remove one of them (with one group as with four): the last
    %% two are killed too.
    [ash_node:stop(M, "KILL") || M <- Alive],
    persistent_term:put({?MODULE, members}, []).

%% Any group's Raft core stopping (a storage error: group 1 cannot write its snapshot, a
%% directory holding the name of the snapshot's temporary file) stops the member with a status
%% other than 0, saying which group; the other groups do not keep a member that cannot serve.
a_groups_raft_core_stopping_stops_the_member(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("shf_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Dir = filename:join(?config(priv_dir, Config), Base),
    Blocker = filename:join([Dir, "group-1", "raft.snapshot.new"]),
    ok = filelib:ensure_dir(filename:join(Blocker, "x")),
    ok = file:write_file(filename:join(Blocker, "x"), <<"in the way">>),
    M = ash_node:start(Config, #{name => Base, exit_expected => true,
                                 args => ["--cluster", "--shards", "2", "--data-dir", Dir,
                                          "--snapshot-every", "5"]}),
    try
        N = ash_node:node(M),
        ok = call(N, {define, R, #{primary_key => [id]}}),
        %% Enough records for group 1 to build a snapshot; calls fail once it stopped.
        [call(N, {create, R, #{id => I}}) || I <- lists:seq(1, 40)],
        ash_node:await(member_exit, fun() -> not ash_node:alive(M) end, ?WAIT),
        {already_exited, Status} = ash_node:stop(M),
        ?assertNotEqual(0, Status),
        ?assertNotEqual([], ash_node:log_contains(M, ["raft core stopped", "group 1"]))
    after
        ash_node:stop(M)
    end.

%% The only member of a cluster restarted with its data directory but one group's files gone
%% (as when it was killed after forming group 0 and before forming the others): it forms that
%% group again, empty, instead of leaving it without a leader for good; the other groups keep
%% their records.
a_group_its_only_member_lost_forms_again(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("shg_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Dir = filename:join(?config(priv_dir, Config), Base),
    Args = ["--cluster", "--shards", "4", "--data-dir", Dir, "--fsync", "always"],
    M1 = ash_node:start(Config, #{name => Base, args => Args}),
    N = ash_node:node(M1),
    await_every_group([M1]),
    ok = call(N, {define, R, #{primary_key => [id]}}),
    Ids = lists:seq(1, 40),
    [{ok, _} = call(N, {create, R, #{id => I}}) || I <- Ids],
    ash_node:stop(M1, "KILL"),
    ok = file:del_dir_r(filename:join(Dir, "group-2")),
    M2 = ash_node:start(Config, #{name => Base, args => Args}),
    try
        await_every_group([M2]),
        Kept = [I || I <- Ids, element(1, call(N, {get, R, #{id => I}})) =:= ok],
        %% Group 2's share is gone, the others' kept (40 records over 4 shards).
        ?assert((length(Kept) > 0 andalso length(Kept) < 40) orelse Kept),
        %% Every shard takes writes again, once the resource is defined again (group 2 lost
        %% its definition with the rest).
        ?assertMatch({error, {unknown_resource, _}},
                     hd([Reply || I <- Ids -- Kept,
                                  {error, _} = Reply <- [call(N, {create, R, #{id => I}})]])),
        ok = call(N, {define, R, #{primary_key => [id]}}),
        [{ok, _} = call(N, {create, R, #{id => I}}) || I <- Ids -- Kept],
        {ok, All} = call(N, {query, R, #{}}),
        ?assertEqual(Ids, lists:sort([I || #{id := I} <- All]))
    after
        ash_node:stop(M2)
    end.

%% Three durable members, 4 shards, every group on all three: two are SIGKILLed and their
%% directories deleted, so every group lost its majority for good. `recover --lost-for-good`
%% on the survivor, group 0 first, then each other group, forms each again from its copy (the
%% old files of group G kept in DIR/group-G/recovered-<id>); the two join again with empty
%% directories; then all three SIGKILLed and restarted from their directories: every record.
every_group_of_a_lost_durable_majority_is_recovered(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("shr_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Dir = fun(L) -> filename:join(?config(priv_dir, Config), Base ++ "_" ++ L) end,
    Start = fun(L, Extra) ->
                    ash_node:start(Config, #{name => Base ++ "_" ++ L,
                                             args => ["--cluster", "--shards", "4",
                                                      "--replicas", "3", "--data-dir", Dir(L),
                                                      "--fsync", "always"] ++ Extra})
            end,
    Cookie = atom_to_list(erlang:get_cookie()),
    First = Start("a", []),
    Join = ["--join", atom_to_list(ash_node:node(First))],
    Started = [First | [Start(L, Join) || L <- ["b", "c"]]],
    put(shr_nodes, Started),
    try
        await_every_group(Started),
        [_, Survivor, _] = Started,
        S = ash_node:node(Survivor),
        ok = call(S, {define, R, #{primary_key => [id]}}),
        Ids = lists:seq(1, 40),
        [{ok, _} = call(S, {create, R, #{id => I, n => I}}) || I <- Ids],
        Want = {ok, [#{id => I, n => I} || I <- Ids]},
        [137 = ash_node:stop(M, "KILL") || M <- Started, M =/= Survivor],
        [ok = file:del_dir_r(Dir(L)) || L <- ["a", "c"]],
        Recover = fun(G) ->
                          fun() ->
                                  {Status, Out} =
                                      ash_node:run_bin(["recover", "--node", atom_to_list(S),
                                                        "--group", integer_to_list(G),
                                                        "--lost-for-good", "--cookie", Cookie],
                                                       90000),
                                  ct:log("recover group ~b: ~p ~s", [G, Status, Out]),
                                  Status =:= 0
                          end
                  end,
        [?assert(ash_node:poll(Recover(G), ?WAIT, 1000)) || G <- [0, 1, 2, 3]],
        ?assertEqual(Want, call(S, {query, R, #{sort => [{id, asc}]}})),
        [?assertMatch([_], filelib:wildcard(filename:join([Dir("b"), Sub, "recovered-*",
                                                           "raft.log"])))
         || Sub <- [".", "group-1", "group-2", "group-3"]],
        %% The lost two come back with empty directories and join.
        Again = [Start(L, ["--join", atom_to_list(S)]) || L <- ["a", "c"]],
        All = [Survivor | Again],
        put(shr_nodes, All),
        await_every_group(All),
        [?assertEqual(Want, call(ash_node:node(M), {query, R, #{sort => [{id, asc}]}}))
         || M <- Again],
        %% Every group formed again is the one the directories hold.
        [137 = ash_node:stop(M, "KILL") || M <- All],
        Back = [Start(L, []) || L <- ["a", "b", "c"]],
        put(shr_nodes, Back),
        await_every_group(Back),
        [?assertEqual(Want, call(ash_node:node(M), {query, R, #{sort => [{id, asc}]}}))
         || M <- Back]
    after
        [ash_node:stop(M) || M <- get(shr_nodes)]
    end.
