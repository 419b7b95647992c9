#!/usr/bin/env escript
%% Speed figures the test suites used to assert as upper time bounds (they now assert only the
%% events, with generous waits): how soon after its deadline an inactive record's 'DOWN' comes,
%% how long 100,000 records with a timeout take to be gone after their deadline, how fast a
%% monitor of a dead record pid and a call to it answer noproc, how soon a record whose expiry
%% handler died is removed, and how soon a stopped node is seen as down. Printed, not asserted.
%%
%%   bench/latency.sh [--rounds N]
-mode(compile).

main(Args) ->
    Rounds = case Args of
                 ["--rounds", N] -> list_to_integer(N);
                 _ -> 20
             end,
    Bin = os:getenv("ASH_GEN_SERVER_BIN"),
    Uniq = integer_to_list(erlang:unique_integer([positive])) ++ "_" ++ os:getpid(),
    {ok, _} = net_kernel:start(list_to_atom("latency_" ++ Uniq ++ "@127.0.0.1"), #{name_domain => longnames}),
    Cookie = list_to_atom("lat_" ++ Uniq),
    erlang:set_cookie(Cookie),
    {Port, Node} = start_node(Bin, "lat_node_" ++ Uniq, Cookie),
    S = {ash_gen_server, Node},
    io:format("latency of events (~b rounds each), node ~s~n~n", [Rounds, Node]),
    io:format("~-60s ~10s ~10s ~10s~n", ["event", "median ms", "p90 ms", "max ms"]),
    row("inactive record 'DOWN' after its 200 ms deadline",
        [expiry_lateness(S, I) || I <- lists:seq(1, Rounds)]),
    row("monitor of a destroyed record's pid -> noproc",
        [noproc_monitor(S, I) || I <- lists:seq(1, Rounds)]),
    row("call to a destroyed record's pid -> noproc",
        [noproc_call(S, I) || I <- lists:seq(1, Rounds)]),
    row("expiry handler killed -> its expired record removed",
        [handler_death(S, I) || I <- lists:seq(1, Rounds)]),
    row("100,000 records (timeout 1500 ms) gone after the deadline", [hundred_k(S)]),
    row("SIGTERM to an idle node -> nodedown here", [node_stop(Bin, Uniq, Cookie)]),
    stop_node(Port, Node),
    ok.

row(Name, Samples) ->
    Sorted = lists:sort(Samples),
    N = length(Sorted),
    Pick = fun(Q) -> lists:nth(max(1, min(N, round(Q * N))), Sorted) end,
    io:format("~-60s ~10b ~10b ~10b~n", [Name, Pick(0.5), Pick(0.9), lists:last(Sorted)]).

now_ms() -> erlang:monotonic_time(millisecond).

call(S, Req) -> gen_server:call(S, Req, 60000).

res(Tag) -> list_to_atom(Tag ++ "_" ++ integer_to_list(erlang:unique_integer([positive]))).

expiry_lateness(S, _) ->
    R = res("exp"),
    ok = call(S, {define, R, #{primary_key => [id], inactivity_timeout => 200}}),
    T0 = now_ms(),
    {ok, _} = call(S, {create, R, #{id => 1}}),
    {ok, Pid} = call(S, {whereis, R, #{id => 1}}),
    Mon = erlang:monitor(process, Pid),
    receive {'DOWN', Mon, process, _, {shutdown, inactivity_timeout}} -> max(0, now_ms() - T0 - 200)
    after 30000 -> error(no_expiry)
    end.

dead_pid(S) ->
    R = res("dead"),
    ok = call(S, {define, R, #{primary_key => [id]}}),
    {ok, _} = call(S, {create, R, #{id => 1}}),
    {ok, Pid} = call(S, {whereis, R, #{id => 1}}),
    ok = call(S, {destroy, R, #{id => 1}}),
    Pid.

noproc_monitor(S, _) ->
    Pid = dead_pid(S),
    T0 = now_ms(),
    Mon = erlang:monitor(process, Pid),
    receive {'DOWN', Mon, process, _, noproc} -> now_ms() - T0 after 30000 -> error(no_down) end.

noproc_call(S, _) ->
    Pid = dead_pid(S),
    T0 = now_ms(),
    {'EXIT', {noproc, _}} = (catch gen_server:call(Pid, get, 30000)),
    now_ms() - T0.

handler_death(S, _) ->
    R = res("hd"),
    ok = call(S, {define, R, #{primary_key => [id], inactivity_timeout => 100,
                               expiry_grace => 60000}}),
    Parent = self(),
    H = spawn(fun() ->
                      ok = gen_server:call(S, {subscribe, [R]}),
                      Parent ! subscribed,
                      receive {ash_gen_server, expired, _} = N -> Parent ! {notice, N} end,
                      receive never -> ok end
              end),
    receive subscribed -> ok end,
    {ok, _} = call(S, {create, R, #{id => 1}}),
    {ok, Pid} = call(S, {whereis, R, #{id => 1}}),
    Mon = erlang:monitor(process, Pid),
    receive {notice, _} -> ok after 30000 -> error(no_notice) end,
    T0 = now_ms(),
    exit(H, kill),
    receive {'DOWN', Mon, process, _, _} -> now_ms() - T0 after 30000 -> error(not_removed) end.

hundred_k(S) ->
    R = res("hk"),
    ok = call(S, {define, R, #{primary_key => [id], inactivity_timeout => 1500}}),
    [{ok, _} = call(S, {bulk_create, R, [#{id => I} || I <- lists:seq(B, B + 4999)], #{}})
     || B <- lists:seq(1, 100000, 5000)],
    Created = now_ms(),
    wait_empty(S, R),
    max(0, now_ms() - Created - 1500).

wait_empty(S, R) ->
    case call(S, {info, R}) of
        {ok, #{count := 0}} -> ok;
        _ -> timer:sleep(20), wait_empty(S, R)
    end.

node_stop(Bin, Uniq, Cookie) ->
    {Port, Node} = start_node(Bin, "lat_stop_" ++ Uniq, Cookie),
    true = erlang:monitor_node(Node, true),
    T0 = now_ms(),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
    receive {nodedown, Node} -> now_ms() - T0 after 30000 -> error(no_nodedown) end.

start_node(Bin, Name, Cookie) ->
    Node = list_to_atom(Name ++ "@127.0.0.1"),
    Port = open_port({spawn_executable, Bin},
                     [{args, ["start", "--name", atom_to_list(Node), "--cookie",
                              atom_to_list(Cookie)]},
                      {line, 4096}, binary, exit_status, {env, [{"RUST_LOG", "error"}]}]),
    receive {Port, {data, {eol, <<"ready ", _/binary>>}}} -> ok
    after 20000 -> error(node_not_ready)
    end,
    pong = net_adm:ping(Node),
    {Port, Node}.

stop_node(Port, _Node) ->
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
    receive {Port, {exit_status, 0}} -> ok;
            {Port, {exit_status, S}} -> error({exit_status, S})
    after 20000 -> error(no_exit)
    end.
