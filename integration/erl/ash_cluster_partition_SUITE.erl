%% A network partition on loopback: one member of three cut off from the other two by its
%% control process (`{isolate, [Node]}`, served with `--enable-fault-injection`: its connections
%% to them close and neither side can connect again until `heal`). The test client still reaches
%% every member. The cut-off member is the leader — the side that still believes it leads.
%%
%% While writers upsert per-key sequence numbers through all three members: the majority elects
%% a leader and takes writes; the minority answers writes `{error, {unavailable, _}}` (never ok);
%% after the heal the cluster is healthy again, every acknowledged write is on every member, and
%% a write the minority took but could not commit is gone from all of them.
-module(ash_cluster_partition_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-import(ash_cluster_lib, [call/2, info/1, await_healthy/2, start_writers/4, stop_writers/1,
                          check_history/3]).

-define(WAIT, 30000).

all() ->
    [isolate_needs_fault_injection, minority_refuses_writes_and_the_heal_loses_nothing].

init_per_suite(Config) ->
    Base = lists:flatten(io_lib:format("clp_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    [First | Rest] = [Base ++ "_" ++ L || L <- ["a", "b", "c"]],
    Faults = ["--enable-fault-injection"],
    A = ash_node:start(Config, #{name => First, args => ["--cluster" | Faults]}),
    Join = ["--cluster", "--join", atom_to_list(ash_node:node(A)) | Faults],
    Members = [A | [ash_node:start(Config, #{name => N, args => Join}) || N <- Rest]],
    await_healthy(Members, 3),
    [{members, Members} | Config].

end_per_suite(Config) ->
    [ash_node:stop(M) || M <- ?config(members, Config)],
    ok.

control(Node, Request) ->
    try gen_server:call({ash_gen_server_control, Node}, Request, 10000)
    catch exit:Reason -> {exit, Reason}
    end.

%% A node started without --enable-fault-injection refuses to be cut off; bad arguments are a
%% bad request.
isolate_needs_fault_injection(Config) ->
    Plain = ash_node:start(Config, #{tag => "clp_plain"}),
    try
        Node = ash_node:node(Plain),
        ?assertEqual({error, fault_injection_disabled}, control(Node, {isolate, [node()]})),
        ?assertEqual({error, fault_injection_disabled}, control(Node, heal)),
        ?assertEqual(pong, net_adm:ping(Node))
    after
        ash_node:stop(Plain)
    end,
    [M | _] = [ash_node:node(N) || N <- ?config(members, Config)],
    ?assertMatch({error, {bad_request, _}}, control(M, {isolate, not_a_list})),
    ?assertMatch({error, {bad_request, _}}, control(M, {isolate, [<<"a@b">>]})).

minority_refuses_writes_and_the_heal_loses_nothing(Config) ->
    Members = ?config(members, Config),
    Nodes = [ash_node:node(M) || M <- Members],
    R = ash_node:uniq_res(partition),
    ok = call(hd(Nodes), {define, R, #{primary_key => [id]}}),
    #{leader := Leader} = info(hd(Nodes)),
    Majority = Nodes -- [Leader],
    Writers = start_writers(Nodes, R, 8, 4),
    timer:sleep(1000),
    ok = control(Leader, {isolate, Majority}),
    %% The majority elects one of its own and serves writes again.
    NewLeader = fun() ->
                        case info(hd(Majority)) of
                            #{leader := L} -> lists:member(L, Majority);
                            _ -> false
                        end
                end,
    ?assert(ash_node:poll(NewLeader, ?WAIT, 100)),
    ?assertMatch({ok, _}, call(hd(Majority), {create, R, #{id => majority_key}})),
    %% The minority cannot commit: it answers unavailable, never ok.
    ?assertMatch({error, {unavailable, _}}, call(Leader, {create, R, #{id => minority_key}})),
    ?assertMatch({error, {unavailable, _}}, call(Leader, {update, R, #{id => majority_key},
                                                         #{n => 1}})),
    %% Neither side can connect to the other while cut off.
    ?assertNot(lists:member(Leader, peers_of(hd(Majority)))),
    timer:sleep(1000),
    ok = control(Leader, heal),
    await_healthy(Members, 3),
    History = stop_writers(Writers),
    ?assertMatch({_, 0, 0}, check_history(Nodes, R, History)),
    [?assertEqual({error, not_found}, call(N, {get, R, #{id => minority_key}})) || N <- Nodes],
    [?assertEqual({ok, #{id => majority_key}}, call(N, {get, R, #{id => majority_key}}))
     || N <- Nodes].

%% The nodes a member is connected to, from its status (`stats`).
peers_of(Node) ->
    {ok, #{peers := Peers}} = call(Node, stats),
    Peers.
