%% What the cluster suites share (ash_cluster_SUITE, ash_cluster_durable_SUITE, ...): calls to a
%% member, waiting for a healthy cluster, and the writers whose histories of acknowledged writes
%% are checked against what every member holds.
%%
%% The writers come with readers (reading the writers' keys through random members), and every
%% write and read is recorded with the times it was called and answered: check_history/3 also
%% checks that history, with the reads it makes at the end, for linearizability, key by key, with
%% the `ash-lincheck` checker (integration/lincheck: todc-utils' Wing-Gong-Lowe checker; built
%% by run_erl.sh, which names it in ASH_LINCHECK_BIN).
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

%% Writers: each owns keys and writes 1, 2, 3... to each, through the members in turn; and
%% `Writers div 2` readers (at least one) reading those keys through random members.
start_writers(Nodes, R, Writers, KeysPerWriter) ->
    Keys = [{W, K} || W <- lists:seq(1, Writers), K <- lists:seq(1, KeysPerWriter)],
    [spawn_link(fun() ->
                        Own = [{W, K} || K <- lists:seq(1, KeysPerWriter)],
                        writer(Nodes, R, W, Own, #{}, 1, [])
                end) || W <- lists:seq(1, Writers)]
        ++ [spawn_link(fun() ->
                               rand:seed(exsss, {Writers + I, 17, 29}),
                               reader(Nodes, R, Writers + I, Keys, [])
                       end) || I <- lists:seq(1, max(1, Writers div 2))].

%% The client's clock for the recorded history, in nanoseconds (from the VM's start: never
%% negative).
now_ns() ->
    erlang:convert_time_unit(erlang:monotonic_time() - erlang:system_info(start_time),
                             native, nanosecond).

%% A recorded operation: {Key, Process, w | r, Value, Called, Answered | unknown}.
writer(Nodes, R, Me, Keys, State, Seq, Ops) ->
    receive
        {stop, From} -> From ! {history, self(), State, Ops}
    after 0 ->
            {State1, Ops1} =
                lists:foldl(
                  fun(Key, {St, Os}) ->
                          Node = lists:nth(erlang:phash2({Key, Seq}, length(Nodes)) + 1, Nodes),
                          {Acked, Tried} = maps:get(Key, St, {0, 0}),
                          Req = {upsert, R, #{id => Key, seq => Seq}, #{}},
                          Called = now_ns(),
                          case call(Node, Req) of
                              {ok, _, _} ->
                                  {St#{Key => {Seq, Seq}}, [{Key, Me, w, Seq, Called, now_ns()} | Os]};
                              %% An error or no answer: it may or may not have been applied.
                              _ ->
                                  {St#{Key => {Acked, max(Tried, Seq)}},
                                   [{Key, Me, w, Seq, Called, unknown} | Os]}
                          end
                  end, {State, Ops}, Keys),
            writer(Nodes, R, Me, Keys, State1, Seq + 1, Ops1)
    end.

reader(Nodes, R, Me, Keys, Ops) ->
    receive
        {stop, From} -> From ! {history, self(), #{}, Ops}
    after 2 ->
            Key = lists:nth(rand:uniform(length(Keys)), Keys),
            Node = lists:nth(rand:uniform(length(Nodes)), Nodes),
            Called = now_ns(),
            Read = read_seq(call(Node, {get, R, #{id => Key}})),
            Answered = now_ns(),
            case Read of
                Seq when is_integer(Seq) -> reader(Nodes, R, Me, Keys, [{Key, Me, r, Seq, Called, Answered} | Ops]);
                %% A failed read tells nothing.
                _ -> reader(Nodes, R, Me, Keys, Ops)
            end
    end.

read_seq({ok, #{seq := S}}) -> S;
read_seq({error, not_found}) -> 0;
read_seq(Other) -> {error, Other}.

%% Stops the writers and readers; returns each key's {LastAcknowledged, LastTried}, and keeps
%% the recorded operations in this process for check_history/3.
stop_writers(Pids) ->
    [P ! {stop, self()} || P <- Pids],
    Collected = [receive {history, P, St, Ops} -> {maps:to_list(St), Ops}
                 after ?WAIT * 2 -> ct:fail({writer_stuck, P})
                 end || P <- Pids],
    put({?MODULE, ops}, lists:append([Ops || {_, Ops} <- Collected])),
    maps:from_list(lists:append([St || {St, _} <- Collected])).

%% Checks a history against what every member holds; logs and returns the counts. Then checks
%% the recorded operations of stop_writers/1, with these reads, for linearizability (the
%% test fails if they are not).
check_history(Nodes, R, History) ->
    Finals = lists:zip(lists:seq(1, length(Nodes)), Nodes),
    {Counts, FinalReads} = maps:fold(
               fun(Key, {Acked, Tried}, {{Ok, Lost, Stale}, Reads}) ->
                       Timed = [begin
                                    Called = now_ns(),
                                    V = read_seq(call(N, {get, R, #{id => Key}})),
                                    {V, {Key, 1000000 + I, r, V, Called, now_ns()}}
                                end || {I, N} <- Finals],
                       Values = [V || {V, _} <- Timed],
                       Reads1 = [Op || {V, Op} <- Timed, is_integer(V)] ++ Reads,
                       {case lists:usort(Values) of
                            [V] when is_integer(V), V >= Acked, V =< Tried -> {Ok + 1, Lost, Stale};
                            [V] when is_integer(V), V < Acked -> {Ok, Lost + 1, Stale};
                            _ -> {Ok, Lost, Stale + 1}
                        end, Reads1}
               end, {{0, 0, 0}, []}, History),
    {Ok, Lost, Stale} = Counts,
    Acked = lists:sum([A || {A, _} <- maps:values(History)]),
    ct:pal("keys: ~b, acknowledged writes: ~b; keys ok: ~b, lost: ~b, stale or disagreeing: ~b",
           [maps:size(History), Acked, Ok, Lost, Stale]),
    ?assert(Acked > 0),
    case erase({?MODULE, ops}) of
        undefined -> ok;
        Ops -> ?assertEqual(linearizable, check_linearizable(Ops ++ FinalReads))
    end,
    Counts.

%% Runs ash-lincheck on the recorded operations: `linearizable` or what it said.
check_linearizable(Ops) ->
    Bin = case os:getenv("ASH_LINCHECK_BIN") of
              false -> ct:fail("ASH_LINCHECK_BIN is not set: run the suites with integration/run_erl.sh, "
                               "which builds integration/lincheck");
              B -> B
          end,
    Dir = case os:getenv("TMPDIR") of false -> "/tmp"; T -> T end,
    File = filename:join(Dir, io_lib:format("ash_history_~s_~b.txt",
                                            [os:getpid(), erlang:unique_integer([positive])])),
    Lines = [io_lib:format("~s ~b ~s ~b ~b ~s~n",
                           [key_name(Key), Proc, Kind, Value, Called, answered(Answered)])
             || {Key, Proc, Kind, Value, Called, Answered} <- Ops],
    ok = file:write_file(File, Lines),
    Port = open_port({spawn_executable, Bin}, [{args, [File]}, exit_status, stderr_to_stdout,
                                               binary, {line, 4096}]),
    {Status, Out} = collect(Port, []),
    Reads = length([x || {_, _, r, _, _, _} <- Ops]),
    ct:pal("linearizability of ~b writes and ~b reads (~s): ~s",
           [length(Ops) - Reads, Reads, File, Out]),
    case Status of
        0 -> file:delete(File), linearizable;
        _ -> {not_linearizable, File, Out}
    end.

key_name({W, K}) -> io_lib:format("~b_~b", [W, K]);
key_name(Key) -> io_lib:format("~w", [Key]).

answered(unknown) -> "-";
answered(T) -> integer_to_list(T).

collect(Port, Acc) ->
    receive
        {Port, {data, {_, Line}}} -> collect(Port, [Acc, Line, $\n]);
        {Port, {exit_status, S}} -> {S, iolist_to_binary(Acc)}
    after 300000 -> ct:fail(lincheck_timeout)
    end.

