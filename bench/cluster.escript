#!/usr/bin/env escript
%% The cluster's cost: a 3-member cluster (`start --cluster`) against a single node, in one run.
%% Rows: get and update p50 at 1 caller (through the leader and through a follower, which
%% forwards), ops/s at 64 callers spread over the members, creating N records with 8 callers,
%% and a drain: SIGTERM to the leader holding those records until the others serve again.
%% Then durability's cost: a single node with `--data-dir` (`--fsync interval` and `always`)
%% and a 3-member cluster with `--data-dir --fsync interval`, each against the same thing in
%% memory: update p50 at 1 caller, creating N records. Last, the single node (holding every
%% record made above) joined by a node with `--join` alone: how long until the joiner holds them.
%% Then three members with `--shards 4` against three with one group (update, query and
%% bulk_create p50, get and update ops/s at 64 callers).
%% Prints ratios (cluster / single node, durable / in memory) and the issue's targets; asserts
%% nothing.
%%
%%   bench/cluster.sh [--ops N] [--records N] [--smoke]
-mode(compile).

main(Args) ->
    Opts = opts(Args, #{ops => 2000, records => 100000, callers => 64}),
    Bin = os:getenv("ASH_GEN_SERVER_BIN"),
    Uniq = integer_to_list(erlang:unique_integer([positive])) ++ "_" ++ os:getpid(),
    {ok, _} = net_kernel:start(list_to_atom("clbench_" ++ Uniq ++ "@127.0.0.1"),
                               #{name_domain => longnames}),
    Cookie = list_to_atom("clb_" ++ Uniq),
    erlang:set_cookie(Cookie),
    Single = start_node(Bin, "clb_single_" ++ Uniq, Cookie, []),
    [A, B, C] = cluster(Bin, "clb_" ++ Uniq, Cookie, fun(_) -> [] end),
    Members = [node_of(N) || N <- [A, B, C]],
    #{leader := Leader} = info(hd(Members)),
    [Follower | _] = Members -- [Leader],
    #{ops := Ops, records := Records, callers := Callers} = Opts,
    io:format("3-member cluster vs single node (~b ops per row, ~b records)~n~n", [Ops, Records]),
    io:format("~-52s ~12s ~12s ~8s ~s~n", ["row", "single", "cluster", "ratio", "target"]),
    R = res(bench),
    [ok = call(N, {define, R, #{primary_key => [id]}}) || N <- [node_of(Single), Leader]],
    [{ok, _} = call(N, {create, R, #{id => I, score => 0}})
     || N <- [node_of(Single), Leader], I <- lists:seq(1, 1000)],
    Get = fun(N, I) -> {ok, _} = call(N, {get, R, #{id => I rem 1000 + 1}}) end,
    Upd = fun(N, I) -> {ok, _} = call(N, {update, R, #{id => I rem 1000 + 1}, #{score => I}}) end,
    SGet = p50(node_of(Single), Get, Ops),
    row("get p50 us, 1 caller, via the leader", SGet, p50(Leader, Get, Ops), "<= 1.5"),
    row("get p50 us, 1 caller, via a follower", SGet, p50(Follower, Get, Ops), ""),
    SUpd = p50(node_of(Single), Upd, Ops),
    row("update p50 us, 1 caller, via the leader", SUpd, p50(Leader, Upd, Ops), "<= 3"),
    row("update p50 us, 1 caller, via a follower", SUpd, p50(Follower, Upd, Ops), ""),
    row("get ops/s, 64 callers over the members", rate([node_of(Single)], Get, Ops, Callers),
        rate(Members, Get, Ops, Callers), ""),
    row("update ops/s, 64 callers over the members", rate([node_of(Single)], Upd, Ops, Callers),
        rate(Members, Upd, Ops, Callers), ""),
    R2 = res(create),
    [ok = call(N, {define, R2, #{primary_key => [id]}}) || N <- [node_of(Single), Leader]],
    row(io_lib:format("create ~b records, 8 callers, ms", [Records]),
        create_ms(node_of(Single), R2, Records), create_ms(Leader, R2, Records), ""),
    %% Drain: SIGTERM to the leader, which holds every record (as every member does).
    [LeaderN] = [N || N <- [A, B, C], node_of(N) =:= Leader],
    T0 = erlang:monotonic_time(millisecond),
    stop_node(LeaderN),
    Exit = erlang:monotonic_time(millisecond) - T0,
    [Other | _] = Members -- [Leader],
    wait_served(Other, R2, Records),
    Served = erlang:monotonic_time(millisecond) - T0,
    io:format("~-52s ~12s ~12b ~8s ~s~n",
              [io_lib:format("drain of the leader with ~b records: exit ms", [Records]), "-", Exit,
               "-", "<= 10000"]),
    io:format("~-52s ~12s ~12b ~8s ~s~n",
              ["  ... until another member serves them, ms", "-", Served, "-", ""]),
    [stop_node(N) || N <- [N || N <- [A, B, C], node_of(N) =/= Leader]],
    durable(Bin, Uniq, Cookie, Single, Opts),
    adopt(Bin, Uniq, Cookie, Single, R2, Records),
    sharded(Bin, Uniq, Cookie, Opts),
    ok.

%% Three members with `--shards 4` against three with one group: each shard has its own
%% leader (spread over the members) and log, so writes to different shards commit
%% independently; a query goes to every shard. Calls go to the members in turn.
sharded(Bin, Uniq, Cookie, #{ops := Ops, callers := Callers}) ->
    One = cluster(Bin, "clb_s1" ++ Uniq, Cookie, fun(_) -> [] end),
    Four = cluster(Bin, "clb_s4" ++ Uniq, Cookie, fun(_) -> ["--shards", "4"] end),
    io:format("~n3 members, --shards 4 against one group, ~b ops per row~n~n", [Ops]),
    io:format("~-52s ~12s ~12s ~8s ~s~n", ["row", "1 shard", "4 shards", "ratio", "target"]),
    [M1, M4] = [[node_of(N) || N <- C] || C <- [One, Four]],
    R = res(sharded),
    [ok = call(hd(Ms), {define, R, #{primary_key => [id]}}) || Ms <- [M1, M4]],
    [{ok, _} = call(lists:nth(I rem 3 + 1, Ms), {create, R, #{id => I, score => 0}})
     || Ms <- [M1, M4], I <- lists:seq(1, 1000)],
    Get = fun(N, I) -> {ok, _} = call(N, {get, R, #{id => I rem 1000 + 1}}) end,
    Upd = fun(N, I) -> {ok, _} = call(N, {update, R, #{id => I rem 1000 + 1}, #{score => I}}) end,
    Query = fun(N, I) ->
                    {ok, [_ | _]} = call(N, {query, R, #{filter => {gte, score, I rem 100},
                                                          sort => [{score, desc}], limit => 10}})
            end,
    row("update p50 us, 1 caller, via a member", p50(hd(M1), Upd, Ops), p50(hd(M4), Upd, Ops), ""),
    row("query p50 us (sort, limit 10), 1 caller", p50(hd(M1), Query, Ops div 4),
        p50(hd(M4), Query, Ops div 4), ""),
    %% What the Ash shim sends for a bulk create: one all_or_nothing batch (100 records here,
    %% over every shard with --shards 4).
    Bulk = fun(N, _) ->
                   From = 100000 + erlang:unique_integer([positive, monotonic]) * 100,
                   Batch = [#{id => From + K, score => 0} || K <- lists:seq(0, 99)],
                   {ok, [_ | _]} = call(N, {bulk_create, R, Batch, #{all_or_nothing => true}})
           end,
    row("bulk_create p50 us (100 records, all_or_nothing)", p50(hd(M1), Bulk, Ops div 20),
        p50(hd(M4), Bulk, Ops div 20), ""),
    row("get ops/s, 64 callers over the members", rate(M1, Get, Ops, Callers),
        rate(M4, Get, Ops, Callers), ""),
    row("update ops/s, 64 callers over the members", rate(M1, Upd, Ops, Callers),
        rate(M4, Upd, Ops, Callers), ""),
    %% A fourth member joins each: with one group every member holds every record (the 4th a
    %% learner), with 4 shards each group but group 0 is on 3 of the 4 (placement).
    {ok, #{c := Total}} = call(hd(M4), {aggregate, R, #{}, [{c, count, id, #{}}]}),
    [{J1, T1}, {J4, T4}] =
        [begin
             T0 = erlang:monotonic_time(millisecond),
             J = start_node(Bin, Prefix ++ "_d", Cookie,
                            ["--cluster", "--join", atom_to_list(hd(Ms))] ++ Extra),
             placed(Ms ++ [node_of(J)], R, Total, 3),
             {J, erlang:monotonic_time(millisecond) - T0}
         end || {Ms, Prefix, Extra} <- [{M1, "clb_s1" ++ Uniq, []},
                                        {M4, "clb_s4" ++ Uniq, ["--shards", "4"]}]],
    %% Every member's copies, over the 4 (each holds 3 of the 4 shards' groups but group 0).
    Mean = fun(Ms, J) ->
                   lists:sum([begin {ok, #{records := C}} = call(N, stats), C end
                              || N <- Ms ++ [node_of(J)]]) div 4
           end,
    row(io_lib:format("records a member holds, mean of 4 (of ~b)", [Total]), Mean(M1, J1),
        Mean(M4, J4), ""),
    row("  ... ms from its start until every copy is in place", T1, T4, ""),
    [stop_node(N) || N <- One ++ Four ++ [J1, J4]],
    ok.

%% Waits until every group has `Replicas` holders and the members hold `Replicas` copies of
%% every record but group 0's (on every member): with one group, every member holds all.
placed(Nodes, R, Total, Replicas) ->
    placed(Nodes, R, Total, Replicas, 600).
placed(Nodes, _R, _Total, _Replicas, 0) -> error({not_placed, [info(N) || N <- Nodes]});
placed(Nodes, R, Total, Replicas, Tries) ->
    Group0 = case info(hd(Nodes)) of
                 #{shards := 1} -> Total;
                 _ ->
                     {ok, #{count := C0}} =
                         gen_server:call({ash_gen_server_group_0, hd(Nodes)}, {info, R}, 60000),
                     C0
             end,
    Held = lists:sum([begin {ok, #{records := C}} = call(N, stats), C end || N <- Nodes]),
    Healthy = lists:all(fun(N) ->
                                case info(N) of
                                    #{healthy := true, groups := Gs} ->
                                        lists:all(fun(G) -> maps:get(settled, G) end, Gs);
                                    #{healthy := H} -> H
                                end
                        end, Nodes),
    case Healthy andalso Held =:= Group0 * length(Nodes) + Replicas * (Total - Group0) of
        true -> ok;
        false -> timer:sleep(100), placed(Nodes, R, Total, Replicas, Tries - 1)
    end.

%% The single node of the rows above (no flag), holding every record those rows made, joined
%% by a node started with `--join` alone: it becomes a member with its records and the joiner
%% receives them in a snapshot. Timed from the joiner's start until its own replica holds them.
adopt(Bin, Uniq, Cookie, Single, R, Records) ->
    {ok, #{records := Held}} = call(node_of(Single), stats),
    T0 = erlang:monotonic_time(millisecond),
    Joiner = start_node(Bin, "clb_join_" ++ Uniq, Cookie, ["--join", atom_to_list(node_of(Single))]),
    Ready = erlang:monotonic_time(millisecond) - T0,
    wait_replica(node_of(Joiner), R, Records),
    Held1 = erlang:monotonic_time(millisecond) - T0,
    io:format("~n~-52s ~12s ~12s ~8s ~s~n", ["a single node becoming a member", "", "", "", ""]),
    io:format("~-52s ~12s ~12b ~8s ~s~n",
              [io_lib:format("single node of ~b records joined: joiner ready, ms", [Held]),
               "-", Ready, "-", ""]),
    io:format("~-52s ~12s ~12b ~8s ~s~n",
              ["  ... until the joiner's own replica holds them, ms", "-", Held1, "-", ""]),
    [stop_node(N) || N <- [Joiner, Single]].

%% Until `Node`'s own record service (not its leader) holds the `Records` records of R.
wait_replica(Node, R, Records) ->
    Req = {aggregate, R, #{}, [{c, count, id, #{}}]},
    case catch gen_server:call({ash_gen_server_records, Node}, Req, 60000) of
        {ok, #{c := N}} when N >= Records - Records rem 8 -> ok;
        _ -> timer:sleep(20), wait_replica(Node, R, Records)
    end.

%% Durable nodes against in-memory ones, in this run: the single node of the rows above, and a
%% fresh in-memory cluster against a durable one (each a leader taking the calls).
durable(Bin, Uniq, Cookie, Single, #{ops := Ops, records := Records}) ->
    Dir = filename:join(os:getenv("TMPDIR", "/tmp"), "clbench_" ++ Uniq),
    ok = filelib:ensure_path(Dir),
    Data = fun(Name) -> ["--data-dir", filename:join(Dir, Name)] end,
    Interval = start_node(Bin, "clb_di_" ++ Uniq, Cookie, Data("interval") ++ ["--fsync", "interval"]),
    Always = start_node(Bin, "clb_da_" ++ Uniq, Cookie, Data("always") ++ ["--fsync", "always"]),
    io:format("~n--data-dir against memory, ~b ops per row~n~n", [Ops]),
    io:format("~-52s ~12s ~12s ~8s ~s~n", ["row", "memory", "durable", "ratio", "target"]),
    Nodes = [node_of(N) || N <- [Single, Interval, Always]],
    R = res(durable),
    [ok = call(N, {define, R, #{primary_key => [id]}}) || N <- Nodes],
    [{ok, _} = call(N, {create, R, #{id => I, score => 0}}) || N <- Nodes, I <- lists:seq(1, 1000)],
    Upd = fun(N, I) -> {ok, _} = call(N, {update, R, #{id => I rem 1000 + 1}, #{score => I}}) end,
    [SUpd, IUpd, AUpd] = [p50(N, Upd, Ops) || N <- Nodes],
    row("single node: update p50 us, 1 caller, fsync interval", SUpd, IUpd, "<= 1.5"),
    row("single node: update p50 us, 1 caller, fsync always", SUpd, AUpd, ""),
    R2 = res(durable_create),
    [ok = call(N, {define, R2, #{primary_key => [id]}}) || N <- Nodes],
    [SCreate, ICreate] = [create_ms(N, R2, Records) || N <- lists:sublist(Nodes, 2)],
    row(io_lib:format("single node: create ~b records, 8 callers, ms", [Records]),
        SCreate, ICreate, ""),
    [stop_node(N) || N <- [Interval, Always]],
    Memory = cluster(Bin, "clb_m" ++ Uniq, Cookie, fun(_) -> [] end),
    Durable = cluster(Bin, "clb_d" ++ Uniq, Cookie,
                      fun(L) -> Data("member_" ++ L) ++ ["--fsync", "interval"] end),
    [MLeader, DLeader] = [maps:get(leader, info(node_of(hd(C)))) || C <- [Memory, Durable]],
    [ok = call(L, {define, R, #{primary_key => [id]}}) || L <- [MLeader, DLeader]],
    [{ok, _} = call(L, {create, R, #{id => I, score => 0}})
     || L <- [MLeader, DLeader], I <- lists:seq(1, 1000)],
    row("cluster: update p50 us, 1 caller, leader, interval", p50(MLeader, Upd, Ops),
        p50(DLeader, Upd, Ops), "<= 1.5"),
    [stop_node(N) || N <- Memory ++ Durable],
    os:cmd("rm -rf '" ++ Dir ++ "'"),
    ok.

%% Three members named Prefix_a/b/c, `Extra(Letter)` added to each one's arguments; healthy.
cluster(Bin, Prefix, Cookie, Extra) ->
    A = start_node(Bin, Prefix ++ "_a", Cookie, ["--cluster"] ++ Extra("a")),
    Join = ["--cluster", "--join", atom_to_list(node_of(A))],
    Others = [start_node(Bin, Prefix ++ "_" ++ L, Cookie, Join ++ Extra(L)) || L <- ["b", "c"]],
    healthy(node_of(A)),
    [A | Others].

opts(["--ops", N | T], O) -> opts(T, O#{ops => positive(N)});
opts(["--records", N | T], O) -> opts(T, O#{records => positive(N)});
opts(["--smoke" | T], O) -> opts(T, O#{ops => 200, records => 2000, callers => 8});
opts([], O) -> O;
opts(["--help" | _], _) -> usage(0);
opts([Other | _], _) ->
    io:format(standard_error, "cluster bench: unknown or incomplete option ~s~n", [Other]),
    usage(2).

positive(N) ->
    case string:to_integer(N) of
        {I, []} when I > 0 -> I;
        _ ->
            io:format(standard_error, "cluster bench: not a positive number: ~s~n", [N]),
            usage(2)
    end.

usage(Status) ->
    io:format(if Status =:= 0 -> standard_io; true -> standard_error end,
              "usage: bench/cluster.sh [--ops N] [--records N] [--smoke]~n"
              "  --ops N      operations per latency or rate row (default 2000)~n"
              "  --records N  records created, then drained and adopted (default 100000)~n"
              "  --smoke      tiny sizes (200 ops, 2000 records, 8 callers)~n", []),
    halt(Status).

node_of({_, Node}) -> Node.

res(Tag) -> list_to_atom(atom_to_list(Tag) ++ "_" ++ integer_to_list(erlang:unique_integer([positive]))).

call(Node, Req) -> gen_server:call({ash_gen_server, Node}, Req, 60000).

info(Node) -> {ok, I} = call(Node, cluster), I.

healthy(Node) -> healthy(Node, 300).
healthy(Node, 0) -> error({not_healthy, info(Node)});
healthy(Node, N) ->
    case info(Node) of
        #{healthy := true, voters := [_, _, _]} -> ok;
        _ -> timer:sleep(100), healthy(Node, N - 1)
    end.

p50(Node, F, Ops) ->
    [F(Node, I) || I <- lists:seq(1, Ops div 10)],
    Times = lists:sort([begin
                            T0 = erlang:monotonic_time(microsecond),
                            F(Node, I),
                            erlang:monotonic_time(microsecond) - T0
                        end || I <- lists:seq(1, Ops)]),
    lists:nth(max(1, length(Times) div 2), Times).

rate(Nodes, F, Ops, Callers) ->
    Parent = self(),
    Per = max(1, Ops div Callers) * 4,
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() ->
                               Node = lists:nth(C rem length(Nodes) + 1, Nodes),
                               [F(Node, C * Per + I) || I <- lists:seq(1, Per)],
                               Parent ! {done, self()}
                       end) || C <- lists:seq(1, Callers)],
    [receive {done, P} -> ok end || P <- Pids],
    Us = erlang:monotonic_time(microsecond) - T0,
    round(Callers * Per * 1000000 / max(1, Us)).

create_ms(Node, R, Records) ->
    Parent = self(),
    Per = Records div 8,
    T0 = erlang:monotonic_time(millisecond),
    Pids = [spawn_link(fun() ->
                               [{ok, _} = call(Node, {create, R, #{id => C * Per + I}})
                                || I <- lists:seq(1, Per)],
                               Parent ! {done, self()}
                       end) || C <- lists:seq(0, 7)],
    [receive {done, P} -> ok end || P <- Pids],
    erlang:monotonic_time(millisecond) - T0.

wait_served(Node, R, Records) ->
    case catch call(Node, {aggregate, R, #{}, [{c, count, id, #{}}]}) of
        {ok, #{c := N}} when N >= Records - Records rem 8 -> ok;
        _ -> timer:sleep(20), wait_served(Node, R, Records)
    end.

row(Name, Single, Cluster, Target) ->
    io:format("~-52s ~12b ~12b ~8.2f ~s~n", [Name, Single, Cluster, Cluster / max(1, Single), Target]).

start_node(Bin, Name, Cookie, Extra) ->
    Node = list_to_atom(Name ++ "@127.0.0.1"),
    Port = open_port({spawn_executable, Bin},
                     [{args, ["start", "--name", atom_to_list(Node), "--cookie",
                              atom_to_list(Cookie)] ++ Extra},
                      {line, 4096}, binary, exit_status, {env, [{"RUST_LOG", "error"}]}]),
    receive {Port, {data, {eol, <<"ready ", _/binary>>}}} -> ok
    after 20000 -> error(node_not_ready)
    end,
    pong = net_adm:ping(Node),
    {Port, Node}.

stop_node({Port, _Node}) ->
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
    receive {Port, {exit_status, 0}} -> ok;
            {Port, {exit_status, S}} -> error({exit_status, S})
    after 60000 -> error(no_exit)
    end.
