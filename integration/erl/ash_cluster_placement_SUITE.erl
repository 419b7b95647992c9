%% Placement of the shards on the members (docs/OPERATIONS.md "Shards"): with more members
%% than `--replicas`, each shard's Raft group is held by `--replicas` of them only, chosen by
%% rendezvous hashing, so a member holds only its share of the records and adding one moves
%% only the shards it wins. Five members, 8 shards, 3 replicas: every record is held by
%% exactly three members (the members' `stats` add up to three times the records) and readable
%% through every member; a sixth member joining takes shards from the others, who drop their
%% copies; a member stopped with SIGTERM hands its shards on and exits 0; a member SIGKILLed
%% leaves its shards two holders of three (they keep serving) and is replaced by another
%% holder once it has been gone a while; a holder cut off past its removal drops its stale copy
%% when healed and joins again; two members stopped at the same moment both hand their shards
%% on; a group whose majority of holders was killed is formed again from the third's copy
%% (`ash-gen-server recover`). Through all of it no record is lost.
-module(ash_cluster_placement_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-import(ash_cluster_lib, [call/2, info/1]).

%% Bounded waits: generous, they only stop a broken run.
-define(WAIT, 60000).
-define(SHARDS, 8).
-define(RECORDS, 200).
-define(REPLICAS, 3).

all() ->
    [each_member_holds_its_share, a_joining_member_takes_its_shards,
     a_stopped_member_hands_its_shards_on, a_lost_member_is_replaced,
     a_holder_cut_off_past_its_removal_drops_its_stale_copy,
     two_members_stopped_at_once_hand_their_shards_on,
     a_group_that_lost_its_majority_is_recovered, a_lost_directory_majority_is_recovered].

init_per_suite(Config) ->
    Base = lists:flatten(io_lib:format("pl_~s_~b", [os:getpid(), ash_node:uniq_int()])),
    [First | Rest] = [Base ++ "_" ++ L || L <- ["a", "b", "c", "d", "e"]],
    Args = ["--shards", integer_to_list(?SHARDS), "--replicas", "3"],
    A = ash_node:start(Config, #{name => First, args => Args}),
    Others = [ash_node:start(Config, #{name => N,
                                       args => Args ++ ["--join", atom_to_list(ash_node:node(A))]})
              || N <- Rest],
    Members = [A | Others],
    persistent_term:put({?MODULE, members}, Members),
    await_placed(Members),
    R = ash_node:uniq_res(placed),
    persistent_term:put({?MODULE, res}, R),
    ok = call(ash_node:node(A), {define, R, #{primary_key => [id]}}),
    Nodes = [ash_node:node(M) || M <- Members],
    [{ok, _} = call(lists:nth(I rem length(Nodes) + 1, Nodes), {create, R, #{id => I, n => I}})
     || I <- lists:seq(1, ?RECORDS)],
    Config.

end_per_suite(_Config) ->
    [ash_node:stop(M) || M <- members()],
    persistent_term:erase({?MODULE, members}),
    ok.

members() -> persistent_term:get({?MODULE, members}).
nodes_() -> [ash_node:node(M) || M <- members()].
res() -> persistent_term:get({?MODULE, res}).

init_per_testcase(_TC, Config) -> Config.
end_per_testcase(_, _) -> ok.

%% Every member sees every shard with a leader and ?REPLICAS holders, all members, healthy and
%% settled (its holders are the ones placement chose: no move under way).
await_placed(Members) ->
    Nodes = [ash_node:node(M) || M <- Members],
    Ready = fun() -> lists:all(fun(Node) -> placed(Node, Nodes) end, Nodes) end,
    case ash_node:poll(Ready, ?WAIT, 200) of
        true -> ok;
        false -> ct:fail({not_placed, [{Node, info(Node)} || Node <- Nodes]})
    end.

placed(Node, Nodes) ->
    case info(Node) of
        #{healthy := true, shards := ?SHARDS, groups := Gs, members := Ms} ->
            lists:sort(Ms) =:= lists:sort(Nodes)
                andalso length(Gs) =:= ?SHARDS
                andalso lists:all(fun(#{group := 0}) -> true;
                                     (#{leader := L, holders := Hs, settled := S}) ->
                                          L =/= undefined andalso S
                                              andalso length(Hs) =:= ?REPLICAS
                                              andalso lists:all(fun(H) ->
                                                                        lists:member(H, Nodes)
                                                                end, Hs)
                                  end, Gs);
        _ -> false
    end.

%% How many records each member holds (its `stats`), by member.
held() ->
    [{N, begin {ok, #{records := C}} = call(N, stats), C end} || N <- nodes_()].

%% How many records of the resource each group holds (its router's `info`, on any member).
group_counts() ->
    Node = hd(nodes_()),
    [{G, begin
             Router = list_to_atom("ash_gen_server_group_" ++ integer_to_list(G)),
             {ok, #{count := C}} = gen_server:call({Router, Node}, {info, res()}, 20000),
             C
         end} || G <- lists:seq(0, ?SHARDS - 1)].

%% What each member should hold: group 0's records (every member holds group 0, the cluster's
%% directory) and those of the groups it is a holder of.
should_hold() ->
    Counts = group_counts(),
    #{groups := Gs} = info(hd(nodes_())),
    Holders = maps:from_list([{G, Hs} || #{group := G, holders := Hs} <- Gs]),
    [{N, lists:sum([C || {G, C} <- Counts,
                         G =:= 0 orelse lists:member(N, maps:get(G, Holders))])}
     || N <- nodes_()].

%% Every member holds exactly the records of its groups (every record of a group > 0 on
%% ?REPLICAS members, of group 0 on all), and every record is readable through every member
%% with its value.
all_there(Expected) ->
    Held = held(),
    Should = should_hold(),
    Counts = group_counts(),
    Readable = lists:all(fun(N) ->
                                 {ok, Rs} = call(N, {query, res(), #{sort => [{id, asc}]}}),
                                 Rs =:= Expected
                         end, nodes_()),
    {_, C0} = lists:keyfind(0, 1, Counts),
    Sum = lists:sum([C || {_, C} <- Held]),
    ct:log("held ~p (sum ~b), should hold ~p, by group ~p, readable everywhere: ~p",
           [Held, Sum, Should, Counts, Readable]),
    Held =:= Should
        andalso Sum =:= C0 * length(nodes_()) + ?REPLICAS * (length(Expected) - C0)
        andalso lists:sum([C || {_, C} <- Counts]) =:= length(Expected)
        andalso Readable.

expected() ->
    [#{id => I, n => I} || I <- lists:seq(1, ?RECORDS)].

await_all_there() ->
    case ash_node:poll(fun() -> all_there(expected()) end, ?WAIT, 500) of
        true -> ok;
        false -> ct:fail({records_not_placed, held(), [{N, info(N)} || N <- nodes_()]})
    end.

%% ---------------------------------------------------------------------------------------------

each_member_holds_its_share(_Config) ->
    Nodes = nodes_(),
    await_all_there(),
    %% Everybody holds some records, and in all fewer than every member holding every record.
    Held = held(),
    [?assert(C > 0, {N, C}) || {N, C} <- Held],
    ?assert(lists:sum([C || {_, C} <- Held]) < length(Nodes) * ?RECORDS),
    %% The shards spread over the members: not every shard on the same three.
    #{groups := Gs} = info(hd(Nodes)),
    Pairs = lists:usort([lists:sort(Hs) || #{group := G, holders := Hs} <- Gs, G > 0]),
    ?assert(length(Pairs) > 1, Pairs),
    %% Each record through each member, gets and writes.
    [?assertEqual({ok, #{id => I, n => I}}, call(N, {get, res(), #{id => I}}))
     || I <- lists:seq(1, ?RECORDS, 7), N <- Nodes],
    {ok, #{count := ?RECORDS}} = call(lists:last(Nodes), {info, res()}).

a_joining_member_takes_its_shards(Config) ->
    Before = held(),
    [A | _] = nodes_(),
    %% Record pids (on their groups' leaders), monitored: a group that moves takes them along.
    Ids = lists:seq(1, ?RECORDS, 5),
    Pids = [begin
                {ok, Pid} = call(lists:nth(I rem length(nodes_()) + 1, nodes_()),
                                 {whereis, res(), #{id => I}}),
                {I, Pid, erlang:monitor(process, Pid)}
            end || I <- Ids],
    E = ash_node:start(Config, #{tag => "pl_f",
                                 args => ["--shards", integer_to_list(?SHARDS),
                                          "--join", atom_to_list(A)]}),
    persistent_term:put({?MODULE, members}, members() ++ [E]),
    await_placed(members()),
    await_all_there(),
    After = held(),
    ct:log("before ~p~nafter ~p", [Before, After]),
    ENode = ash_node:node(E),
    {_, Taken} = lists:keyfind(ENode, 1, After),
    ?assert(Taken > 0),
    %% The others hold no more than before (they dropped what it took: all_there/1 checked
    %% that each holds exactly its groups' records), and its groups took ?REPLICAS holders
    %% from the others.
    [?assert(C =< proplists:get_value(N, Before), {N, C}) || {N, C} <- After, N =/= ENode],
    #{groups := Gs} = info(ENode),
    [?assertEqual(?REPLICAS, length(Hs)) || #{group := G, holders := Hs} <- Gs, G > 0],
    %% A pid whose group's leader handed the group on ended with {shutdown, {moved, Leader}};
    %% whereis (through any member) gives a live pid for every record.
    Nodes = nodes_(),
    Moved = [receive
                 {'DOWN', Ref, process, Pid, Reason} ->
                     ?assertMatch({shutdown, {moved, _}}, Reason, {I, Pid}),
                     {shutdown, {moved, To}} = Reason,
                     ?assert(lists:member(To, Nodes), {I, To}),
                     I
             after 0 -> kept
             end || {I, Pid, Ref} <- Pids],
    ct:log("pids moved: ~p of ~p", [length(Moved -- [kept]), length(Pids)]),
    [begin
         {ok, New} = call(lists:nth(I rem length(Nodes) + 1, Nodes), {whereis, res(), #{id => I}}),
         ?assertEqual({ok, #{id => I, n => I}}, gen_server:call(New, get, 20000))
     end || {I, _, _} <- Pids].

a_stopped_member_hands_its_shards_on(_Config) ->
    %% The member holding the most records stops.
    [{Node, _} | _] = lists:reverse(lists:keysort(2, held())),
    [M] = [M || M <- members(), ash_node:node(M) =:= Node],
    ?assertEqual(0, ash_node:stop(M)),
    persistent_term:put({?MODULE, members}, members() -- [M]),
    await_placed(members()),
    await_all_there().

a_lost_member_is_replaced(_Config) ->
    [M | _] = members(),
    ash_node:stop(M, "KILL"),
    persistent_term:put({?MODULE, members}, members() -- [M]),
    Nodes = nodes_(),
    %% Writable through the others as soon as the shards it led elect new leaders (each shard
    %% keeps two holders of three, a majority).
    Written = fun() ->
                      lists:all(fun(I) ->
                                        N = lists:nth(I rem length(Nodes) + 1, Nodes),
                                        call(N, {update, res(), #{id => I}, #{n => I}})
                                            =:= {ok, #{id => I, n => I}}
                                end, lists:seq(1, ?RECORDS))
              end,
    ?assert(ash_node:poll(Written, ?WAIT, 500)),
    %% The lost member is still a member (nobody removed it), but once it has been gone a
    %% while its shards have new holders: three live copies of every record again (all_there
    %% counts the copies the live members hold).
    Dead = ash_node:node(M),
    await_all_there(),
    #{groups := Gs, members := Ms} = info(hd(Nodes)),
    ?assert(lists:member(Dead, Ms)),
    [?assertNot(lists:member(Dead, Hs), G) || #{group := G, holders := Hs} <- Gs, G > 0].

%% A holder cut off from the other members (`{isolate, Others}`, `--enable-fault-injection`)
%% long enough to be replaced and removed from its group never hears of its removal: its log
%% still counts it. Healed, it is a holder again (placement ranks it first again), finds the
%% group's leader does not count it, drops its stale copy and joins afresh: the group settles
%% on it again and its own copy has every write made while it was cut off. Four members of
%% their own, 2 shards, 3 replicas.
a_holder_cut_off_past_its_removal_drops_its_stale_copy(Config) ->
    Ms = start_members(Config, "plz", ["a", "b", "c", "d"],
                       ["--shards", "2", "--replicas", "3", "--enable-fault-injection"]),
    Nodes = [ash_node:node(M) || M <- Ms],
    try
        Group1 = fun(Node) ->
                         case info(Node) of
                             #{healthy := true, groups := Gs, members := Members} ->
                                 case lists:sort(Members) =:= lists:sort(Nodes) of
                                     true -> lists:keyfind(1, 1, [{G, I} || #{group := G} = I <- Gs]);
                                     false -> false
                                 end;
                             _ -> false
                         end
                 end,
        Settled = fun(Node, Want) ->
                          case Group1(Node) of
                              {1, #{settled := true, leader := L, holders := Hs}} when L =/= undefined ->
                                  Want(lists:sort(Hs));
                              _ -> false
                          end
                  end,
        ash_node:await(settled, fun() -> lists:all(fun(N) -> Settled(N, fun(_) -> true end) end, Nodes) end, ?WAIT),
        {1, #{holders := Holders, leader := Leader1}} = Group1(hd(Nodes)),
        #{leader := Leader0} = info(hd(Nodes)),
        %% A holder of group 1 that leads neither group (fewer moves to wait for).
        [X | _] = [H || H <- Holders, H =/= Leader1, H =/= Leader0] ++ (Holders -- [Leader1]),
        Others = Nodes -- [X],
        R = ash_node:uniq_res(cut_off),
        ok = call(hd(Others), {define, R, #{primary_key => [id]}}),
        Ids = lists:seq(1, 40),
        [{ok, _} = call(hd(Others), {create, R, #{id => I, n => 0}}) || I <- Ids],
        Group1Ids = fun(Node) ->
                            {ok, Rs} = gen_server:call({ash_gen_server_group_1, Node},
                                                       {query, R, #{}}, 20000),
                            lists:sort([I || #{id := I} <- Rs])
                    end,
        ok = gen_server:call({ash_gen_server_control, X}, {isolate, Others}, 20000),
        %% Writes go on without it (group 1 keeps two holders of three).
        [{ok, _} = call(lists:nth(I rem 3 + 1, Others), {update, R, #{id => I}, #{n => 1}})
         || I <- Ids],
        %% Gone for a while, it is replaced: group 1 settles on the three others.
        ash_node:await(replaced,
                       fun() -> lists:all(fun(N) -> Settled(N, fun(Hs) -> Hs =:= lists:sort(Others) end) end,
                                          Others)
                       end, ?WAIT),
        InGroup1 = Group1Ids(hd(Others)),
        ?assertNotEqual([], InGroup1),
        ok = gen_server:call({ash_gen_server_control, X}, heal, 20000),
        %% Healed, it holds group 1 again: the group settles on the first holders, X included.
        ash_node:await(back,
                       fun() -> lists:all(fun(N) -> Settled(N, fun(Hs) -> Hs =:= lists:sort(Holders) end) end,
                                          Others)
                       end, ?WAIT),
        %% Its own copy of group 1 (its records process, no forwarding) has every write made
        %% while it was cut off.
        Own = fun() ->
                      case gen_server:call({ash_gen_server_records_1, X}, {query, R, #{}}, 20000) of
                          {ok, Rs} -> lists:sort([{I, N} || #{id := I, n := N} <- Rs]);
                          Other -> Other
                      end
              end,
        Want = [{I, 1} || I <- InGroup1],
        ?assert(ash_node:poll(fun() -> Own() =:= Want end, ?WAIT, 200) orelse {Own(), Want})
    after
        [catch gen_server:call({ash_gen_server_control, N}, heal, 20000) || N <- Nodes],
        [ash_node:stop(M) || M <- Ms]
    end.

%% Two members stopped with SIGTERM at the same moment (peers' clusters have lost shards when
%% several nodes left at once): each hands its shards on while the other does too, both exit 0,
%% and the three left hold every group, settled and with a leader, every record readable through
%% each of them with its last value, and take writes. Five members of their own, 4 shards, 3
%% replicas; the two that stop are the pair that hold the most groups together (a group that
%% both held moves two of its three holders at once).
two_members_stopped_at_once_hand_their_shards_on(Config) ->
    with_five(Config, "pl2", fun(Ms, Nodes, R, Ids) ->
        #{groups := Gs} = info(hd(Nodes)),
        Together = fun(X, Y) ->
                           length([G || #{group := G, holders := Hs} <- Gs, G > 0,
                                        lists:member(X, Hs), lists:member(Y, Hs)])
                   end,
        {_, X, Y} = lists:max([{Together(X, Y), X, Y} || X <- Nodes, Y <- Nodes, X < Y]),
        ct:log("stopping ~p and ~p at once; they hold ~b groups together: ~p",
               [X, Y, Together(X, Y), Gs]),
        Stopping = [M || M <- Ms, lists:member(ash_node:node(M), [X, Y])],
        Self = self(),
        [spawn_link(fun() -> Self ! {stopped, M, ash_node:stop(M)} end) || M <- Stopping],
        Statuses = [receive
                        {stopped, M, Status} -> {ash_node:node(M), Status}
                    after ?WAIT -> ct:fail({not_stopped, ash_node:node(M)})
                    end || M <- Stopping],
        ?assertEqual([{N, 0} || N <- [ash_node:node(M) || M <- Stopping]], Statuses),
        Left = Nodes -- [X, Y],
        await_settled(not_placed_on_the_three_left, Left, Left),
        all_readable_and_writable(R, Ids, Left)
    end).

%% Two holders of a group SIGKILLed, the third kept (in memory: the two can only come back
%% empty), so the group has no majority, no leader, for ever: `ash-gen-server recover --group
%% G` on the third forms it again from its copy (and so for any other group both held). The
%% killed are chosen so that group 0 keeps its majority, and the third is the group's leader
%% when that allows (it still believes it leads). Then the groups grow back on three live
%% holders, every record of every group is readable through each live member with its last
%% value, and writes go on. Five members of their own, 4 shards, 3 replicas.
a_group_that_lost_its_majority_is_recovered(Config) ->
    with_five(Config, "plr", fun(Ms, Nodes, R, Ids) ->
        #{groups := Gs, voters := Voters0} = info(hd(Nodes)),
        %% {prefer the leader as the survivor, group, the two lost}
        Choices = [{Leader =:= S, G, Hs -- [S]}
                   || #{group := G, holders := Hs, leader := Leader} <- Gs, G > 0,
                      S <- Hs,
                      length([V || V <- Hs -- [S], lists:member(V, Voters0)]) =< 1],
        ?assertNotEqual([], Choices, {Gs, Voters0}),
        {_, _, Lost} = lists:max(Choices),
        Left = Nodes -- Lost,
        kill_and_recover(R, Ms, Gs, Lost, []),
        %% Group 0 still counts the two killed (they are removed after --remove-lost-after).
        await_settled(not_recovered, Left, Nodes),
        all_readable_and_writable(R, Ids, Left)
    end).

%% Group 0 (on every member: the cluster's membership, and shard 0's records) loses two of its
%% three voters for good, SIGKILLed: `recover --group 0` on its leader (which still believes it
%% leads), forms it again; the two members that followed it as learners find it no
%% longer counts them, drop their copy and join again (as does one holding an old copy of a
%% group formed again). Groups > 0 that both lost ones held are recovered on their third
%% holder; a group whose holders are alive keeps them (no live member drops its copy of such a
%% group while group 0 grows back and counts fewer members). Then everything settles on the
%% three live members, every record readable with its last value through each, and writes go
%% on. Five members of their own, 4 shards, 3 replicas.
a_lost_directory_majority_is_recovered(Config) ->
    with_five(Config, "pld", fun(Ms, Nodes, R, Ids) ->
        %% The leader may be the member that formed the cluster, leading on as a learner
        %% once the ranked members vote: two voters other than it are lost either way.
        #{groups := Gs, voters := Voters0, leader := S} = info(hd(Nodes)),
        Lost = lists:sublist(Voters0 -- [S], 2),
        Left = Nodes -- Lost,
        %% The node logs' own timestamps (UTC, microseconds) from here on.
        Since = list_to_binary(calendar:system_time_to_rfc3339(erlang:system_time(microsecond),
                                                               [{unit, microsecond},
                                                                {offset, "Z"}])),
        Recovered = kill_and_recover(R, Ms, Gs, Lost, [{0, S}]),
        await_settled(not_recovered, Left, Left),
        %% The live members dropped copies of group 0 (the learners') and of the groups
        %% formed again (an old copy), never of a group that kept its holders.
        Kept = [integer_to_list(G) || #{group := G} <- Gs, G > 0,
                                      not lists:keymember(G, 1, Recovered)],
        Live = [M || M <- Ms, lists:member(ash_node:node(M), Left)],
        Dropped = [{ash_node:node(M), L}
                   || M <- Live, G <- Kept,
                      L <- ash_node:log_contains(M, ["no longer holding the group",
                                                     "group=" ++ G ++ " "]),
                      binary:part(L, 0, byte_size(Since)) > Since],
        ?assertEqual([], Dropped),
        all_readable_and_writable(R, Ids, Left)
    end).

%% SIGKILLs the members named `Lost` and forms again every group they leave without a
%% majority (each group > 0 of `Gs` both held, on its third holder, and `Also`,
%% [{Group, Node}]) with `ash-gen-server recover`, each survivor's own copy having every write
%% first. Returns the groups recovered, [{Group, Node}].
kill_and_recover(R, Ms, Gs, Lost, Also) ->
    ct:log("groups ~p; losing ~p", [Gs, Lost]),
    Orphans = Also ++ [{G, hd(Hs -- Lost)} || #{group := G, holders := Hs} <- Gs, G > 0,
                                              Lost -- Hs =:= []],
    ct:log("killing ~p; recovering ~p", [Lost, Orphans]),
    Sorted = fun({ok, Rs}) -> lists:sort(Rs); (Other) -> Other end,
    Complete = fun(G, Node) ->
                       Suffix = case G of 0 -> ""; _ -> "_" ++ integer_to_list(G) end,
                       Router = list_to_atom("ash_gen_server_group_" ++ integer_to_list(G)),
                       Own = list_to_atom("ash_gen_server_records" ++ Suffix),
                       Sorted(gen_server:call({Router, Node}, {query, R, #{}}, 20000))
                           =:= Sorted(gen_server:call({Own, Node}, {query, R, #{}}, 20000))
               end,
    [?assert(ash_node:poll(fun() -> Complete(G, N) end, ?WAIT, 100), {G, N})
     || {G, N} <- Orphans],
    [137 = ash_node:stop(M, "KILL") || M <- Ms, lists:member(ash_node:node(M), Lost)],
    Cookie = atom_to_list(erlang:get_cookie()),
    Recover = fun(G, Node) ->
                      fun() ->
                              {Status, Out} =
                                  ash_node:run_bin(["recover", "--node", atom_to_list(Node),
                                                    "--group", integer_to_list(G),
                                                    "--cookie", Cookie], 90000),
                              ct:log("recover ~b on ~p: ~p ~s", [G, Node, Status, Out]),
                              Status =:= 0
                      end
              end,
    [?assert(ash_node:poll(Recover(G, N), ?WAIT, 1000), {G, N}) || {G, N} <- Orphans],
    [?assertNotEqual([], ash_node:wait_log(M, ["formed the group again",
                                                "group=" ++ integer_to_list(G) ++ " "], ?WAIT))
     || {G, N} <- Orphans, M <- Ms, ash_node:node(M) =:= N],
    Orphans.

%% Five members of their own (names Prefix_..._a to _e), --shards 4, --replicas 3, once settled
%% and holding the records write_records/2 wrote: Fun(Members, Nodes, Resource, Ids), then
%% every member stopped.
with_five(Config, Prefix, Fun) ->
    Ms = start_members(Config, Prefix, ["a", "b", "c", "d", "e"],
                       ["--shards", "4", "--replicas", "3"]),
    Nodes = [ash_node:node(M) || M <- Ms],
    try
        await_settled(not_placed, Nodes, Nodes),
        R = ash_node:uniq_res(list_to_atom(Prefix)),
        Ids = write_records(R, Nodes),
        %% Settled still (the test reads the holders next).
        await_settled(not_placed, Nodes, Nodes),
        Fun(Ms, Nodes, R, Ids)
    after
        [ash_node:stop(M) || M <- Ms]
    end.

%% Waits until each member of `On` sees the cluster healthy and settled: every group of the 4
%% with a leader and 3 holders, all of them in `On`, and group 0's members `Members`; the same
%% in two looks a second apart (a view can look settled between two steps of a move).
await_settled(What, On, Members) ->
    Settled = fun(Node) ->
                      case info(Node) of
                          #{healthy := true, groups := Gs, members := Ms} ->
                              Ok = lists:sort(Ms) =:= lists:sort(Members)
                                  andalso length(Gs) =:= 4
                                  andalso lists:all(
                                            fun(#{group := 0}) -> true;
                                               (#{leader := L, holders := Hs, settled := S}) ->
                                                    L =/= undefined andalso S
                                                        andalso length(Hs) =:= 3
                                                        andalso Hs -- On =:= []
                                            end, Gs),
                              Ok andalso [{G, lists:sort(Hs)} || #{group := G, holders := Hs} <- Gs];
                          _ -> false
                      end
              end,
    Look = fun() -> [Settled(N) || N <- On] end,
    Twice = fun() ->
                    First = Look(),
                    not lists:member(false, First)
                        andalso begin timer:sleep(1000), Look() =:= First end
            end,
    case ash_node:poll(Twice, ?WAIT, 200) of
        true -> ok;
        false -> ct:fail({What, [{N, info(N)} || N <- On]})
    end.

%% Members of their own, named Prefix_<pid>_<n>_<letter>, started with `Args`: the first forms
%% the cluster, the others join it.
start_members(Config, Prefix, Letters, Args) ->
    Base = lists:flatten(io_lib:format("~s_~s_~b", [Prefix, os:getpid(), ash_node:uniq_int()])),
    [First | Rest] = [Base ++ "_" ++ L || L <- Letters],
    A = ash_node:start(Config, #{name => First, args => Args}),
    [A | [ash_node:start(Config, #{name => N,
                                   args => Args ++ ["--join", atom_to_list(ash_node:node(A))]})
          || N <- Rest]].

%% Defines R and writes 120 records through the members in turn (created with n => 0, then
%% updated to n => 1); returns their ids.
write_records(R, Nodes) ->
    ok = call(hd(Nodes), {define, R, #{primary_key => [id]}}),
    Ids = lists:seq(1, 120),
    N = length(Nodes),
    [{ok, _} = call(lists:nth(I rem N + 1, Nodes), {create, R, #{id => I, n => 0}}) || I <- Ids],
    [{ok, _} = call(lists:nth((I + 2) rem N + 1, Nodes), {update, R, #{id => I}, #{n => 1}})
     || I <- Ids],
    Ids.

%% Every record readable through each of `Nodes` with n => 1, then updated to n => 2 through
%% them in turn and read back.
all_readable_and_writable(R, Ids, Nodes) ->
    Want = [#{id => I, n => 1} || I <- Ids],
    [?assertEqual({ok, Want}, call(N, {query, R, #{sort => [{id, asc}]}})) || N <- Nodes],
    Len = length(Nodes),
    [?assertEqual({ok, #{id => I, n => 2}},
                  call(lists:nth(I rem Len + 1, Nodes), {update, R, #{id => I}, #{n => 2}}))
     || I <- Ids],
    [?assertEqual({ok, #{id => I, n => 2}}, call(N, {get, R, #{id => I}}))
     || I <- lists:seq(1, length(Ids), 11), N <- Nodes].
