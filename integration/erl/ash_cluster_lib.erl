%% What the cluster suites share (ash_cluster_SUITE, ash_cluster_durable_SUITE): calls to a
%% member, waiting for a healthy cluster, and the writers whose histories of acknowledged writes
%% are checked against what every member holds.
-module(ash_cluster_lib).

-include_lib("stdlib/include/assert.hrl").

-export([call/2, info/1, await_healthy/2, start_writers/4, stop_writers/1, check_history/3]).

%% Bounded waits: generous, they only stop a broken run.
-define(WAIT, 30000).
-define(CALL, 20000).

call(Node, Req) ->
    try gen_server:call({ash_gen_server, Node}, Req, ?CALL)
    catch exit:Reason -> {exit, Reason}
    end.

info(Node) ->
    case call(Node, cluster) of
        {ok, Info} -> Info;
        Other -> Other
    end.

await_healthy(Members, N) ->
    Nodes = [ash_node:node(M) || M <- Members],
    Healthy = fun() ->
                      Infos = [info(Node) || Node <- Nodes],
                      lists:all(fun(#{healthy := true, voters := Vs, leader := L}) ->
                                        length(Vs) =:= N andalso L =/= undefined;
                                   (_) -> false
                                end, Infos)
                      andalso length(lists:usort([L || #{leader := L} <- Infos])) =:= 1
              end,
    case ash_node:poll(Healthy, ?WAIT, 100) of
        true -> ok;
        false -> ct:fail({not_healthy, [{Node, info(Node)} || Node <- Nodes]})
    end.

%% Writers: each owns keys and writes 1, 2, 3... to each, through the members in turn.
start_writers(Nodes, R, Writers, KeysPerWriter) ->
    Parent = self(),
    [spawn_link(fun() ->
                        Keys = [{W, K} || K <- lists:seq(1, KeysPerWriter)],
                        writer(Parent, Nodes, R, Keys, #{}, 1)
                end) || W <- lists:seq(1, Writers)].

writer(Parent, Nodes, R, Keys, State, Seq) ->
    receive
        {stop, From} -> From ! {history, self(), State}
    after 0 ->
            State1 = lists:foldl(
                       fun(Key, St) ->
                               Node = lists:nth(erlang:phash2({Key, Seq}, length(Nodes)) + 1, Nodes),
                               {Acked, Tried} = maps:get(Key, St, {0, 0}),
                               Req = {upsert, R, #{id => Key, seq => Seq}, #{}},
                               case call(Node, Req) of
                                   {ok, _, _} -> St#{Key => {Seq, Seq}};
                                   _ -> St#{Key => {Acked, max(Tried, Seq)}}
                               end
                       end, State, Keys),
            writer(Parent, Nodes, R, Keys, State1, Seq + 1)
    end.

stop_writers(Pids) ->
    [P ! {stop, self()} || P <- Pids],
    maps:from_list(lists:append([begin
                                     receive {history, P, St} -> maps:to_list(St)
                                     after ?WAIT * 2 -> ct:fail({writer_stuck, P})
                                     end
                                 end || P <- Pids])).

%% Checks a history against what every member holds; logs and returns the counts.
check_history(Nodes, R, History) ->
    Counts = maps:fold(
               fun(Key, {Acked, Tried}, {Ok, Lost, Stale}) ->
                       Values = [case call(N, {get, R, #{id => Key}}) of
                                     {ok, #{seq := S}} -> S;
                                     {error, not_found} -> 0;
                                     Other -> {error, Other}
                                 end || N <- Nodes],
                       case lists:usort(Values) of
                           [V] when is_integer(V), V >= Acked, V =< Tried -> {Ok + 1, Lost, Stale};
                           [V] when is_integer(V), V < Acked -> {Ok, Lost + 1, Stale};
                           _ -> {Ok, Lost, Stale + 1}
                       end
               end, {0, 0, 0}, History),
    {Ok, Lost, Stale} = Counts,
    Acked = lists:sum([A || {A, _} <- maps:values(History)]),
    ct:pal("keys: ~b, acknowledged writes: ~b; keys ok: ~b, lost: ~b, stale or disagreeing: ~b",
           [maps:size(History), Acked, Ok, Lost, Stale]),
    ?assert(Acked > 0),
    Counts.

