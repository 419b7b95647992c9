%% A cluster of three Rust nodes with a data directory each (`start --cluster --data-dir DIR`,
%% docs/OPERATIONS.md "Clustering"): the members keep their Raft id, vote and log on disk, so
%%
%% - after a SIGKILL of all three members, restarted with the same names and directories (and
%%   no --join), every write acknowledged before the kill is readable from every member with
%%   its last value, and the cluster takes writes again;
%% - one member killed and restarted alone comes back as the same member (same Raft id, still
%%   three members) and counts again: with another member down, the writes it acknowledges
%%   need it;
%% - a record's maximum lifetime keeps counting from its creation across the restart of the
%%   whole cluster (the log carries the leader's time of each write);
%% - a durable single node joined becomes a member with every record; one whose Raft core
%%   fails while it does (its snapshot cannot be written) exits non-zero and, started again,
%%   is the single node it was, with every record;
%% - two members of three lost with their directories: `recover` refuses to form the group
%%   again from the survivor's copy until told the directories are lost for good, then does,
%%   its old files set aside; the two join it again with empty directories, and the group formed
%%   again is the one every member's directory holds after a SIGKILL of all three.
%%
%% The members use the three --fsync policies (a SIGKILL of the process loses nothing in any).
%% The writers and the history check are the cluster suites' (ash_cluster_lib).
-module(ash_cluster_durable_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(WAIT, 30000).
-define(CALL, 20000).

all() ->
    [sigkill_of_every_member_loses_no_acknowledged_write,
     a_member_restarted_alone_keeps_its_place,
     lifetime_counts_from_creation_across_a_restart,
     a_durable_single_node_joined_keeps_every_record_in_the_cluster,
     a_single_node_that_fails_to_become_a_member_stays_what_it_was,
     a_lost_majority_whose_directories_are_lost_for_good_is_recovered].

init_per_suite(Config) ->
    Base = lists:flatten(io_lib:format("cld_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Names = [Base ++ "_" ++ L || L <- ["a", "b", "c"]],
    Priv = ?config(priv_dir, Config),
    Specs = lists:zip3(Names, [filename:join(Priv, N) || N <- Names], ["always", "interval", "never"]),
    persistent_term:put({?MODULE, specs}, Specs),
    [FirstSpec | Rest] = Specs,
    First = start_member(Config, FirstSpec, []),
    Others = [start_member(Config, S, ["--join", atom_to_list(ash_node:node(First))])
              || S <- Rest],
    Members = [First | Others],
    ash_cluster_lib:await_healthy(Members, 3),
    set_members(Members),
    Config.

end_per_suite(_Config) ->
    [ash_node:stop(M) || M <- members()],
    persistent_term:erase({?MODULE, members}),
    persistent_term:erase({?MODULE, specs}),
    ok.

members() -> persistent_term:get({?MODULE, members}).
set_members(Members) -> persistent_term:put({?MODULE, members}, Members).

init_per_testcase(TC, Config) ->
    [{res, ash_node:uniq_res(TC)} | Config].

end_per_testcase(_, _) -> ok.

start_member(Config, {Name, Dir, Fsync}, Extra) ->
    ash_node:start(Config, #{name => Name,
                             args => ["--cluster", "--data-dir", Dir, "--fsync", Fsync] ++ Extra}).

spec_of(#{name := Name}) ->
    lists:keyfind(Name, 1, persistent_term:get({?MODULE, specs})).

%% Restarts `Member` (already stopped) with its name and directory, without --join and
%% without --cluster: the Raft log in its directory makes it a member again.
restart(Config, Member) ->
    {Name, Dir, Fsync} = spec_of(Member),
    ash_node:start(Config, #{name => Name, args => ["--data-dir", Dir, "--fsync", Fsync]}).

nodes_of() -> [ash_node:node(M) || M <- members()].

call(Node, Req) -> ash_cluster_lib:call(Node, Req).

%% The Raft id a member's log reports ("opened the raft log in the data directory ... id=N").
raft_id(Member) ->
    Ids = [Id || Line <- ash_node:log_lines(Member),
                 string:find(Line, "opened the raft log") =/= nomatch,
                 {match, [Id]} <- [re:run(Line, "\\bid=([0-9]+)", [{capture, all_but_first, binary}])]],
    case Ids of
        [Id | _] -> Id;
        [] -> ct:fail({no_raft_id_in_log, ash_node:node(Member)})
    end.

member_count(Node) ->
    #{members := Ms} = ash_cluster_lib:info(Node),
    length(Ms).

%% ---------------------------------------------------------------------------------------------

sigkill_of_every_member_loses_no_acknowledged_write(Config) ->
    R = ?config(res, Config),
    Nodes = nodes_of(),
    ok = call(hd(Nodes), {define, R, #{primary_key => [id]}}),
    Ids = [raft_id(M) || M <- members()],
    Writers = ash_cluster_lib:start_writers(Nodes, R, 8, 4),
    timer:sleep(2000),
    ct:pal("killing every member"),
    [ash_node:stop(M, "KILL") || M <- members()],
    History = ash_cluster_lib:stop_writers(Writers),
    %% The same names and directories, no --join: each knows its peers from its log.
    Back = [restart(Config, M) || M <- members()],
    set_members(Back),
    ash_cluster_lib:await_healthy(Back, 3),
    ?assertEqual(Ids, [raft_id(M) || M <- Back]),
    ?assertEqual([3, 3, 3], [member_count(N) || N <- Nodes]),
    ?assertEqual({maps:size(History), 0, 0}, ash_cluster_lib:check_history(Nodes, R, History)),
    %% And it takes writes again, through any member, seen by every member.
    {ok, _, _} = call(lists:last(Nodes), {upsert, R, #{id => after_restart, seq => 1}, #{}}),
    [?assertEqual({ok, #{id => after_restart, seq => 1}}, call(N, {get, R, #{id => after_restart}}))
     || N <- Nodes].

a_member_restarted_alone_keeps_its_place(Config) ->
    R = ?config(res, Config),
    Nodes = nodes_of(),
    ok = call(hd(Nodes), {define, R, #{primary_key => [id]}}),
    Writers = ash_cluster_lib:start_writers(Nodes, R, 6, 4),
    timer:sleep(1500),
    #{leader := LeaderNode} = ash_cluster_lib:info(hd(Nodes)),
    [Leader] = [M || M <- members(), ash_node:node(M) =:= LeaderNode],
    Id = raft_id(Leader),
    ct:pal("killing the leader ~p and restarting it alone", [LeaderNode]),
    ash_node:stop(Leader, "KILL"),
    timer:sleep(1000),
    Back = restart(Config, Leader),
    Members = [case M of Leader -> Back; _ -> M end || M <- members()],
    set_members(Members),
    timer:sleep(1000),
    History = ash_cluster_lib:stop_writers(Writers),
    ash_cluster_lib:await_healthy(Members, 3),
    ?assertEqual(Id, raft_id(Back)),
    ?assertEqual([3, 3, 3], [member_count(N) || N <- Nodes]),
    ?assertEqual({maps:size(History), 0, 0}, ash_cluster_lib:check_history(Nodes, R, History)),
    %% It counts: with another member down, a write needs its acknowledgement.
    [Other | _] = [M || M <- Members, M =/= Back],
    ash_node:stop(Other, "KILL"),
    ?assertMatch({ok, _, _},
                 poll_write(ash_node:node(Back), {upsert, R, #{id => counted, seq => 1}, #{}})),
    ?assertEqual({ok, #{id => counted, seq => 1}},
                 call(ash_node:node(Back), {get, R, #{id => counted}})),
    Again = restart(Config, Other),
    Final = [case M of Other -> Again; _ -> M end || M <- Members],
    set_members(Final),
    ash_cluster_lib:await_healthy(Final, 3),
    ?assertEqual({ok, #{id => counted, seq => 1}},
                 call(ash_node:node(Again), {get, R, #{id => counted}})).

%% A write through `Node`, retried while a new leader is elected.
poll_write(Node, Req) ->
    Deadline = erlang:monotonic_time(millisecond) + ?WAIT,
    poll_write(Node, Req, Deadline).

poll_write(Node, Req, Deadline) ->
    case call(Node, Req) of
        {ok, _, _} = Ok -> Ok;
        Other ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> Other;
                false -> timer:sleep(200), poll_write(Node, Req, Deadline)
            end
    end.

lifetime_counts_from_creation_across_a_restart(Config) ->
    R = ?config(res, Config),
    Nodes = nodes_of(),
    Lifetime = 15000,
    ok = call(hd(Nodes), {define, R, #{primary_key => [id], maximum_lifetime => Lifetime}}),
    {ok, _} = call(lists:last(Nodes), {create, R, #{id => 1}}),
    Created = erlang:monotonic_time(millisecond),
    %% Each member's own replica, asked without touching the record.
    Count = fun(N) ->
                    case gen_server:call({ash_gen_server_records, N}, {info, R}, ?CALL) of
                        {ok, #{count := K}} -> K;
                        Other -> Other
                    end
            end,
    ?assert(ash_node:poll(fun() -> [Count(N) || N <- Nodes] =:= [1, 1, 1] end, ?WAIT, 20)),
    [ash_node:stop(M, "KILL") || M <- members()],
    %% Down until the record's lifetime has run out.
    timer:sleep(max(0, Created + Lifetime + 1000 - erlang:monotonic_time(millisecond))),
    Restarted = erlang:monotonic_time(millisecond),
    Back = [restart(Config, M) || M <- members()],
    set_members(Back),
    ash_cluster_lib:await_healthy(Back, 3),
    %% Born at its creation, the record expires as soon as a leader is elected; born again at
    %% the replay, it would live `Lifetime` more, on every member.
    Left = Restarted + Lifetime - 4000 - erlang:monotonic_time(millisecond),
    ?assert(Left > 0),
    ?assert(ash_node:poll(fun() -> [Count(N) || N <- Nodes] =:= [0, 0, 0] end, Left, 100)
            orelse [Count(N) || N <- Nodes]).

%% A single node with a data directory (`--data-dir`, no other flag), holding records and
%% serving writers, joined by two nodes with `--join` alone and data directories of their own:
%% it becomes a member, its records go into the Raft snapshot and log in its directory, and its
%% journal is retired. SIGKILL all three and start them again with their directories only:
%% every record made before and every acknowledged write is there, on every node.
a_durable_single_node_joined_keeps_every_record_in_the_cluster(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("dc_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Dir = fun(L) -> filename:join(?config(priv_dir, Config), Base ++ "_" ++ L) end,
    Start = fun(L, Extra) ->
                    ash_node:start(Config, #{name => Base ++ "_" ++ L,
                                             args => ["--data-dir", Dir(L)] ++ Extra})
            end,
    First = Start("a", []),
    FirstNode = ash_node:node(First),
    ok = call(FirstNode, {define, R, #{primary_key => [id]}}),
    Before = [begin {ok, Rec} = call(FirstNode, {create, R, #{id => {before, I}, n => I}}), Rec end
              || I <- lists:seq(1, 50)],
    Writers = ash_cluster_lib:start_writers([FirstNode], R, 4, 3),
    timer:sleep(500),
    Join = ["--join", atom_to_list(FirstNode)],
    Others = [Start(L, Join) || L <- ["b", "c"]],
    Started = [First | Others],
    put(dc_nodes, Started),
    try
        ash_cluster_lib:await_healthy(Started, 3),
        History = ash_cluster_lib:stop_writers(Writers),
        ?assertNotEqual([], ash_node:log_contains(First, ["journal is retired"])),
        ?assertNot(filelib:is_regular(filename:join(Dir("a"), "journal.log"))),
        ?assert(filelib:is_regular(filename:join(Dir("a"), "raft.snapshot"))),
        ct:pal("killing every node"),
        [ash_node:stop(M, "KILL") || M <- Started],
        Back = [Start(L, []) || L <- ["a", "b", "c"]],
        put(dc_nodes, Back),
        ash_cluster_lib:await_healthy(Back, 3),
        Nodes = [ash_node:node(M) || M <- Back],
        [?assertEqual({ok, Rec}, call(N, {get, R, #{id => maps:get(id, Rec)}}))
         || N <- Nodes, Rec <- Before],
        ?assertEqual({maps:size(History), 0, 0},
                     ash_cluster_lib:check_history(Nodes, R, History))
    after
        [ash_node:stop(M) || M <- get(dc_nodes)]
    end.

a_single_node_that_fails_to_become_a_member_stays_what_it_was(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("df_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Dir = filename:join(?config(priv_dir, Config), Base ++ "_a"),
    StartFirst = fun(Opts) ->
                         ash_node:start(Config, Opts#{name => Base ++ "_a",
                                                      args => ["--data-dir", Dir]})
                 end,
    First = StartFirst(#{exit_expected => true}),
    FirstNode = ash_node:node(First),
    ok = call(FirstNode, {define, R, #{primary_key => [id]}}),
    Before = [begin {ok, Rec} = call(FirstNode, {create, R, #{id => I, n => I}}), Rec end
              || I <- lists:seq(1, 30)],
    %% The snapshot cannot be written: a directory holds the name of its temporary file.
    Blocker = filename:join(Dir, "raft.snapshot.new"),
    ok = filelib:ensure_dir(filename:join(Blocker, "x")),
    ok = file:write_file(filename:join(Blocker, "x"), <<"in the way">>),
    Joiner = ash_node:start(Config, #{name => Base ++ "_b",
                                      args => ["--join", atom_to_list(FirstNode)]}),
    put(df_nodes, [Joiner]),
    try
        %% Its Raft core stops on the storage error, and so does the node, with an error.
        ash_node:await(first_node_exit, fun() -> not ash_node:alive(First) end, ?WAIT),
        {already_exited, Status} = ash_node:stop(First),
        ?assertNotEqual(0, Status),
        ?assertNotEqual([], ash_node:log_contains(First, ["raft core stopped"])),
        ?assert(filelib:is_regular(filename:join(Dir, "journal.log"))),
        %% The disk mended, it starts again with its directory as the single node it was.
        ok = file:del_dir_r(Blocker),
        Back = StartFirst(#{}),
        put(df_nodes, [Joiner, Back]),
        ?assertNotEqual([], ash_node:log_contains(Back, ["starts as the single node it was"])),
        ?assertEqual({role, single}, gen_server:call({ash_gen_server_role, FirstNode}, ping,
                                                     ?CALL)),
        [?assertEqual({ok, Rec}, call(FirstNode, {get, R, #{id => maps:get(id, Rec)}}))
         || Rec <- Before],
        {ok, _} = call(FirstNode, {create, R, #{id => after_restart, n => 0}})
    after
        [ash_node:stop(M) || M <- get(df_nodes)]
    end.

%% Two of three durable members lost with their directories (a disk lost, a machine gone): the
%% survivor has no majority for ever. `recover` refuses to form the group again while the lost
%% members could still come back with their directories, and does it with --lost-for-good:
%% the survivor leads alone with every record and its last value, its old Raft files kept in
%% recovered-<id>. The two start again with empty directories and join it; then all three are
%% SIGKILLed and started again with their directories: the group formed again is on disk.
a_lost_majority_whose_directories_are_lost_for_good_is_recovered(Config) ->
    R = ?config(res, Config),
    Base = lists:flatten(io_lib:format("dr_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    Dir = fun(L) -> filename:join(?config(priv_dir, Config), Base ++ "_" ++ L) end,
    Start = fun(L, Extra) ->
                    ash_node:start(Config, #{name => Base ++ "_" ++ L,
                                             args => ["--cluster", "--data-dir", Dir(L),
                                                      "--fsync", "always"] ++ Extra})
            end,
    Cookie = atom_to_list(erlang:get_cookie()),
    Recover = fun(Node, Extra) ->
                      ash_node:run_bin(["recover", "--node", atom_to_list(Node),
                                        "--cookie", Cookie] ++ Extra, 90000)
              end,
    First = Start("a", []),
    Join = ["--join", atom_to_list(ash_node:node(First))],
    Started = [{"a", First} | [{L, Start(L, Join)} || L <- ["b", "c"]]],
    put(dr_nodes, [M || {_, M} <- Started]),
    Query = fun(N) -> call(N, {query, R, #{sort => [{id, asc}]}}) end,
    try
        ash_cluster_lib:await_healthy([M || {_, M} <- Started], 3),
        Nodes = [ash_node:node(M) || {_, M} <- Started],
        ok = call(hd(Nodes), {define, R, #{primary_key => [id]}}),
        Ids = lists:seq(1, 30),
        [{ok, _} = call(lists:nth(I rem 3 + 1, Nodes), {create, R, #{id => I, n => I}})
         || I <- Ids],
        [{ok, _} = call(lists:nth((I + 1) rem 3 + 1, Nodes), {update, R, #{id => I}, #{n => -I}})
         || I <- Ids],
        %% The survivor is a follower; the leader and the other follower are lost, disks too.
        #{leader := Leader} = ash_cluster_lib:info(hd(Nodes)),
        [S | _] = Nodes -- [Leader],
        [{SL, Survivor}] = [P || {_, M} = P <- Started, ash_node:node(M) =:= S],
        Lost = [P || {_, M} = P <- Started, M =/= Survivor],
        Inc = {request_id, erlang:unique_integer([positive]),
               {update, R, #{id => 1}, #{}, #{atomics => [{n, {'+', {ref, n}, {value, 1}}}]}}},
        ?assertEqual({ok, #{id => 1, n => 0}}, call(Leader, Inc)),
        [137 = ash_node:stop(M, "KILL") || {_, M} <- Lost],
        [ok = file:del_dir_r(Dir(L)) || {L, _} <- Lost],
        {Status0, Out0} = Recover(S, []),
        ct:log("recover without --lost-for-good: ~p ~s", [Status0, Out0]),
        ?assertNotEqual(0, Status0),
        ?assertNotEqual(nomatch, binary:match(Out0, <<"--lost-for-good">>)),
        ?assertEqual([], filelib:wildcard(filename:join(Dir(SL), "recovered-*"))),
        Recovered = fun() ->
                            {Status, Out} = Recover(S, ["--lost-for-good"]),
                            ct:log("recover --lost-for-good: ~p ~s", [Status, Out]),
                            Status =:= 0
                    end,
        ?assert(ash_node:poll(Recovered, ?WAIT, 1000)),
        ?assertMatch(#{leader := S, members := [S], voters := [S], healthy := true},
                     ash_cluster_lib:info(S)),
        ?assertMatch([_], filelib:wildcard(filename:join([Dir(SL), "recovered-*", "raft.log"]))),
        ?assertEqual({ok, [#{id => I, n => case I of 1 -> 0; _ -> -I end} || I <- Ids]},
                     Query(S)),
        %% A write retried with its request id is applied once.
        ?assertEqual({ok, #{id => 1, n => 0}}, call(S, Inc)),
        [?assertEqual({ok, #{id => I, n => I * 10}},
                      call(S, {update, R, #{id => I}, #{n => I * 10}})) || I <- Ids],
        %% The lost two come back with empty directories (new members) and join it.
        Again = [Start(L, ["--join", atom_to_list(S)]) || {L, _} <- Lost],
        All = [Survivor | Again],
        put(dr_nodes, All),
        ash_cluster_lib:await_healthy(All, 3),
        Final = [#{id => I, n => I * 10} || I <- Ids],
        [?assertEqual({ok, Final}, Query(ash_node:node(M))) || M <- Again],
        %% The group formed again is the one the directories hold.
        [137 = ash_node:stop(M, "KILL") || M <- All],
        Back = [Start(L, []) || L <- ["a", "b", "c"]],
        put(dr_nodes, Back),
        ash_cluster_lib:await_healthy(Back, 3),
        [?assertEqual({ok, Final}, Query(ash_node:node(M))) || M <- Back],
        {ok, _} = call(ash_node:node(hd(Back)), {create, R, #{id => 31, n => 31}})
    after
        [ash_node:stop(M) || M <- get(dr_nodes)]
    end.
