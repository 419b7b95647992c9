%% Raft snapshots and log compaction in a cluster of three Rust nodes (`start --cluster
%% --snapshot-every N`, docs/OPERATIONS.md "Clustering"): the members capture their records
%% every N log entries and drop the log before it, so
%%
%% - the log stays bounded under a steady stream of writes (`cluster` reports the last index,
%%   the last one dropped and the last one the snapshot covers);
%% - a member that joins after the log was dropped, and a member killed and started again
%%   under the same name (a new member), receive the snapshot and then the log: every
%%   acknowledged write is readable from every member, and the newcomer's own replica holds
%%   every record;
%% - with `--data-dir`, members killed together come back from their snapshot and the log
%%   after it: nothing acknowledged is lost, a record's maximum lifetime keeps counting from its
%%   creation, and a request id answered before the snapshot is still answered once.
-module(ash_cluster_snapshot_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(WAIT, 30000).
-define(CALL, 20000).
-define(EVERY, "100").

all() ->
    [the_log_stays_bounded_and_newcomers_get_the_snapshot,
     durable_members_come_back_from_their_snapshot].

init_per_testcase(TC, Config) ->
    [{res, ash_node:uniq_res(TC)} | Config].

end_per_testcase(_, _) ->
    [ash_node:stop(M) || M <- erase_members()],
    ok.

erase_members() ->
    Ms = persistent_term:get({?MODULE, members}, []),
    persistent_term:erase({?MODULE, members}),
    Ms.

set_members(Ms) -> persistent_term:put({?MODULE, members}, Ms).

names(Tag) ->
    Base = lists:flatten(io_lib:format("~s_~s_~b", [Tag, os:getpid(), ash_node:uniq_int()])),
    [Base ++ "_" ++ L || L <- ["a", "b", "c", "d"]].

start_member(Config, Name, Extra) ->
    ash_node:start(Config, #{name => Name,
                             args => ["--cluster", "--snapshot-every", ?EVERY] ++ Extra}).

join(First) -> ["--join", atom_to_list(ash_node:node(First))].

call(Node, Req) -> ash_cluster_lib:call(Node, Req).

log_of(Node) ->
    #{log := Log} = ash_cluster_lib:info(Node),
    Log.

%% What a member's own replica holds for key `Id` (read without going through the leader).
replica_get(Node, R, Id) ->
    gen_server:call({ash_gen_server_records, Node}, {get, R, #{id => Id}}, ?CALL).

%% ---------------------------------------------------------------------------------------------

the_log_stays_bounded_and_newcomers_get_the_snapshot(Config) ->
    R = ?config(res, Config),
    [NA, NB, NC, ND] = names("snap"),
    A = start_member(Config, NA, []),
    B = start_member(Config, NB, join(A)),
    C = start_member(Config, NC, join(A)),
    set_members([A, B, C]),
    ash_cluster_lib:await_healthy([A, B, C], 3),
    Nodes = [ash_node:node(M) || M <- [A, B, C]],
    ok = call(hd(Nodes), {define, R, #{primary_key => [id]}}),
    Writers = ash_cluster_lib:start_writers(Nodes, R, 6, 4),
    %% Many times the snapshot interval: the log is dropped behind the snapshots.
    ?assert(ash_node:poll(fun() ->
                                  #{last := Last} = log_of(hd(Nodes)),
                                  Last > 1500
                          end, ?WAIT * 2, 200)),
    Logs = [log_of(N) || N <- Nodes],
    ct:pal("logs while writing: ~p", [Logs]),
    [begin
         ?assert(is_integer(Purged) andalso is_integer(Snap)),
         %% What is left: the tail kept after the last snapshot and what came since.
         ?assert(Last - Purged =< 4 * list_to_integer(?EVERY))
     end || #{last := Last, purged := Purged, snapshot := Snap} <- Logs],
    %% A fourth node joins (a learner: three replicas): the log it would need is gone.
    D = start_member(Config, ND, join(B)),
    set_members([A, B, C, D]),
    ?assertNotEqual([], ash_node:wait_log(D, ["installed a raft snapshot from the leader"], ?WAIT)),
    %% A member killed and started again under its name is a new member: a snapshot too.
    ash_node:stop(C, "KILL"),
    C2 = start_member(Config, NC, join(A)),
    set_members([A, B, C2, D]),
    ?assertNotEqual([], ash_node:wait_log(C2, ["installed a raft snapshot from the leader"], ?WAIT)),
    timer:sleep(1000),
    History = ash_cluster_lib:stop_writers(Writers),
    ash_cluster_lib:await_healthy([A, B, C2, D], 3),
    All = Nodes ++ [ash_node:node(D)],
    ?assertEqual({maps:size(History), 0, 0}, ash_cluster_lib:check_history(All, R, History)),
    %% The newcomers' own replicas hold every record with its last value (the leader's
    %% writes applied once the snapshot was in).
    [begin
         ?assert(ash_node:poll(
                   fun() ->
                           lists:all(fun({Key, {Acked, Tried}}) ->
                                             case replica_get(N, R, Key) of
                                                 {ok, #{seq := S}} -> S >= Acked andalso S =< Tried;
                                                 _ -> false
                                             end
                                     end, maps:to_list(History))
                   end, ?WAIT, 200))
     end || N <- [ash_node:node(C2), ash_node:node(D)]].

durable_members_come_back_from_their_snapshot(Config) ->
    R = ?config(res, Config),
    L = ash_node:uniq_res(lived),
    Priv = ?config(priv_dir, Config),
    Names = lists:sublist(names("snapd"), 3),
    Dirs = [filename:join(Priv, N) || N <- Names],
    Specs = lists:zip(Names, Dirs),
    Start = fun({Name, Dir}, Extra) -> start_member(Config, Name, ["--data-dir", Dir] ++ Extra) end,
    [{NA, _} = SA | Rest] = Specs,
    A = Start(SA, []),
    Others = [Start(S, join(A)) || S <- Rest],
    Ms = [A | Others],
    set_members(Ms),
    ash_cluster_lib:await_healthy(Ms, 3),
    Nodes = [ash_node:node(M) || M <- Ms],
    ok = call(hd(Nodes), {define, R, #{primary_key => [id]}}),
    Lifetime = 20000,
    ok = call(hd(Nodes), {define, L, #{primary_key => [id], maximum_lifetime => Lifetime}}),
    {ok, _} = call(lists:last(Nodes), {create, L, #{id => 1}}),
    Created = erlang:monotonic_time(millisecond),
    ReqId = erlang:unique_integer([positive]),
    Once = {request_id, ReqId, {create, R, #{id => once, seq => 1}}},
    {ok, First} = call(hd(Nodes), Once),
    Writers = ash_cluster_lib:start_writers(Nodes, R, 6, 4),
    ?assert(ash_node:poll(fun() ->
                                  #{snapshot := S} = log_of(hd(Nodes)),
                                  is_integer(S) andalso S > 300
                          end, ?WAIT * 2, 200)),
    [?assert(filelib:is_regular(filename:join(D, "raft.snapshot"))) || D <- Dirs],
    %% Down from at least 6 s after the creation: the lifetime check below tells a lifetime
    %% counted from the creation from one counted from the restart.
    timer:sleep(max(0, Created + 6000 - erlang:monotonic_time(millisecond))),
    ct:pal("killing every member"),
    [ash_node:stop(M, "KILL") || M <- Ms],
    History = ash_cluster_lib:stop_writers(Writers),
    Back = [Start(S, []) || S <- Specs],
    set_members(Back),
    ash_cluster_lib:await_healthy(Back, 3),
    [?assertNotEqual([], ash_node:log_contains(M, ["loaded the raft snapshot from the data directory"]))
     || M <- Back],
    ?assertEqual({maps:size(History), 0, 0}, ash_cluster_lib:check_history(Nodes, R, History)),
    %% Answered before the snapshot: the same id gets the first answer, not already_exists.
    [?assertEqual({ok, First}, call(N, Once)) || N <- Nodes],
    %% The record's lifetime counts from its creation: it expires then, not a lifetime after
    %% the restart.
    Count = fun(N) ->
                    case gen_server:call({ash_gen_server_records, N}, {info, L}, ?CALL) of
                        {ok, #{count := K}} -> K;
                        Other -> Other
                    end
            end,
    Restarted = erlang:monotonic_time(millisecond),
    Deadline = max(Created + Lifetime + 5000, Restarted + 3000),
    ?assert(Deadline < Restarted + Lifetime),
    ?assert(ash_node:poll(fun() -> [Count(N) || N <- Nodes] =:= [0, 0, 0] end,
                          Deadline - Restarted, 100)
            orelse {still_there, [Count(N) || N <- Nodes]}),
    ct:pal("~s: the record expired ~b ms after its creation", [NA, erlang:monotonic_time(millisecond) - Created]).
