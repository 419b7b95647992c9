%% Distribution semantics: hidden node, monitors (by pid and by name), links and exit signals
%% both ways, restarts after exit signals, cleanup when a peer node disconnects.
-module(ash_distribution_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(REQ(R), ash_node:req(Config, R)).

all() ->
    [hidden_node, monitor_server_by_name, monitor_unknown_name_noproc,
     old_style_call_tag_and_alias, monitor_record_destroy_normal, monitor_dead_pid_noproc,
     call_dead_pid_noproc_promptly, demonitor, many_monitors,
     linked_process_abnormal_exit_restarts_record, destroy_sends_exit_normal_to_links,
     exit_kill_restarts_with_last_state, exit_custom_reason_restarts, exit_normal_ignored,
     exit_shutdown_removes_record, exit_shutdown_tuple_removes_record, unlink_stops_propagation,
     link_to_dead_record_pid, peer_monitor_gets_down, peer_disconnect_drops_links_and_monitors,
     peer_killed_drops_links_and_monitors, peer_disconnect_loses_no_record,
     node_stop_downs_monitors, rust_nodes_and_beam_nodes_form_one_cluster].

init_per_suite(Config) ->
    ash_node:start_suite(Config, #{tag => "dist"}).

end_per_suite(Config) ->
    ash_node:stop_suite(Config).

init_per_testcase(TC, Config) ->
    R = ash_node:uniq_res(TC),
    ok = ash_node:req(Config, {define, R, #{primary_key => [id]}}),
    [{res, R} | Config].

end_per_testcase(_, _) ->
    ok.

%% ---------------------------------------------------------------------------------------------
%% helpers

mk(Config, Id) ->
    R = ?config(res, Config),
    {ok, _} = ?REQ({create, R, #{id => Id, n => 0}}),
    {ok, Pid} = ?REQ({whereis, R, #{id => Id}}),
    Pid.

whereis_(Config, Id) -> ?REQ({whereis, ?config(res, Config), #{id => Id}}).

%% Several committed updates, so "last committed state" is not the created one.
updates(Config, Id, N) ->
    R = ?config(res, Config),
    [{ok, _} = ?REQ({update, R, #{id => Id}, #{n => K}}) || K <- lists:seq(1, N)],
    #{id => Id, n => N}.

%% Waits for the record to come back under another pid; returns the new pid.
restarted(Config, Id, OldPid) ->
    ash_node:await({restarted, Id},
                   fun() -> case whereis_(Config, Id) of
                                {ok, P} -> P =/= OldPid;
                                _ -> false
                            end
                   end, 2000),
    {ok, New} = whereis_(Config, Id),
    New.

%% A process linked to Pid. Trap: whether it traps exits (then it forwards them to us).
%% The link is in place when this returns (a call from the same process follows the link).
linker(Pid, Trap) ->
    Parent = self(),
    L = spawn(fun() ->
                      process_flag(trap_exit, Trap),
                      link(Pid),
                      _ = (catch gen_server:call(Pid, get, 2000)),
                      Parent ! {linked, self()},
                      linker_loop(Parent, Pid)
              end),
    receive {linked, L} -> L after 3000 -> ct:fail(linker_not_ready) end.

linker_loop(Parent, Pid) ->
    receive
        {'EXIT', _, _} = E -> Parent ! {self(), E}, linker_loop(Parent, Pid);
        {exit, Reason} -> exit(Reason);
        unlink ->
            unlink(Pid),
            _ = (catch gen_server:call(Pid, get, 2000)),
            Parent ! {self(), unlinked},
            linker_loop(Parent, Pid);
        stop -> ok
    end.

got_exit(L, Timeout) ->
    receive {L, {'EXIT', From, Reason}} -> {From, Reason}
    after Timeout -> no_exit
    end.

%% ---------------------------------------------------------------------------------------------

hidden_node(Config) ->
    Node = ?config(node, Config),
    ?assertEqual(pong, net_adm:ping(Node)),
    ?assert(lists:member(Node, nodes(hidden))),
    ?assertNot(lists:member(Node, nodes())),
    ?assertNot(lists:member(Node, nodes(visible))),
    ?assert(lists:member(Node, nodes(connected))),
    ?assertEqual(pong, ?REQ(ping)).

%% A mixed cluster: a second Rust node connects to the first at start (`--connect`: Rust to
%% Rust distribution, each node keeping its own records), and this BEAM node, connected to
%% both, keeps each one's records apart; record pids from either node work from here, and
%% neither Rust node is a visible member of the cluster.
rust_nodes_and_beam_nodes_form_one_cluster(Config) ->
    First = ?config(node, Config),
    Second = ash_node:start(Config, #{tag => "dist_second",
                                      args => ["--connect", atom_to_list(First)]}),
    SecondNode = ash_node:node(Second),
    try
        %% The join happened at start: each Rust node counts the other as a connection.
        {ok, #{connections := C2}} = gen_server:call({ash_gen_server, SecondNode}, stats),
        ?assert(C2 >= 2),
        ?assert(lists:member(SecondNode, nodes(hidden))),
        ?assertNot(lists:member(SecondNode, nodes())),
        R = ash_node:uniq_res("cluster"),
        [ok = gen_server:call({ash_gen_server, N}, {define, R, #{primary_key => [id]}})
         || N <- [First, SecondNode]],
        {ok, _} = gen_server:call({ash_gen_server, First}, {create, R, #{id => 1, at => first}}),
        {ok, _} = gen_server:call({ash_gen_server, SecondNode}, {create, R, #{id => 1, at => second}}),
        ?assertEqual({ok, #{id => 1, at => first}},
                     gen_server:call({ash_gen_server, First}, {get, R, #{id => 1}})),
        ?assertEqual({ok, #{id => 1, at => second}},
                     gen_server:call({ash_gen_server, SecondNode}, {get, R, #{id => 1}})),
        {ok, P1} = gen_server:call({ash_gen_server, First}, {whereis, R, #{id => 1}}),
        {ok, P2} = gen_server:call({ash_gen_server, SecondNode}, {whereis, R, #{id => 1}}),
        ?assertEqual(First, node(P1)),
        ?assertEqual(SecondNode, node(P2)),
        ?assertEqual({ok, #{id => 1, at => second}}, gen_server:call(P2, get)),
        %% Between the two Rust nodes: the first is asked (on behalf of the second's record
        %% process P2) to take P2 as an expiry handler. It monitors P2 across the Rust-to-Rust
        %% connection and replies to P2 there; when P2's record is destroyed on the second, the
        %% monitor fires back across, and the first forgets the handler.
        S1 = {ash_gen_server, First},
        {ok, #{expiry_handlers := H0, remote_monitors := M0}} = gen_server:call(S1, stats),
        S1 ! {'$gen_call', {P2, make_ref()}, subscribe},
        ash_node:await(first_monitors_p2,
                       fun() -> {ok, #{expiry_handlers := H, remote_monitors := M}} =
                                    gen_server:call(S1, stats),
                                {H, M} =:= {H0 + 1, M0 + 1} end, 10000),
        ?assertEqual(ok, gen_server:call({ash_gen_server, SecondNode}, {destroy, R, #{id => 1}})),
        ash_node:await(p2_down_reached_first,
                       fun() -> {ok, #{expiry_handlers := H, remote_monitors := M}} =
                                    gen_server:call(S1, stats),
                                {H, M} =:= {H0, M0} end, 10000)
    after
        ?assertEqual(0, ash_node:stop(Second))
    end.

monitor_server_by_name(Config) ->
    Node = ?config(node, Config),
    Mon = erlang:monitor(process, {ash_gen_server, Node}),
    ash_node:no_down(Mon, 200),
    ?assertEqual(pong, ?REQ(ping)),
    ?assert(erlang:demonitor(Mon, [flush])),
    ash_node:no_down(Mon, 50).

monitor_unknown_name_noproc(Config) ->
    Node = ?config(node, Config),
    Mon = erlang:monitor(process, {no_such_registered_name, Node}),
    receive
        {'DOWN', Mon, process, Who, Reason} ->
            ?assertEqual({no_such_registered_name, Node}, Who),
            ?assertEqual(noproc, Reason)
    after 10000 -> ct:fail(no_down_for_unknown_name)
    end.

%% Replies go to From with the plain tag, or to the alias when the tag is [alias | Ref].
old_style_call_tag_and_alias(Config) ->
    Node = ?config(node, Config),
    Ref = make_ref(),
    {ash_gen_server, Node} ! {'$gen_call', {self(), Ref}, ping},
    receive {Ref, Reply} -> ?assertEqual(pong, Reply)
    after 2000 -> ct:fail(no_reply_to_plain_tag)
    end,
    Alias = alias(),
    {ash_gen_server, Node} ! {'$gen_call', {self(), [alias | Alias]}, ping},
    receive {[alias | Alias], Reply2} -> ?assertEqual(pong, Reply2)
    after 2000 -> ct:fail(no_reply_to_alias)
    end,
    unalias(Alias),
    %% a deactivated alias: the reply is dropped by our runtime, nothing arrives
    {ash_gen_server, Node} ! {'$gen_call', {self(), [alias | Alias]}, ping},
    receive {[alias | Alias], _} = M -> ct:fail({reply_through_dead_alias, M})
    after 200 -> ok
    end,
    %% and a record pid answers the same way
    Pid = mk(Config, 1),
    Ref2 = make_ref(),
    Pid ! {'$gen_call', {self(), Ref2}, get},
    receive {Ref2, Got} -> ?assertEqual({ok, #{id => 1, n => 0}}, Got)
    after 2000 -> ct:fail(no_reply_from_record_pid)
    end.

monitor_record_destroy_normal(Config) ->
    Pid = mk(Config, 1),
    Mon = erlang:monitor(process, Pid),
    ash_node:no_down(Mon, 100),
    ok = ?REQ({destroy, ?config(res, Config), #{id => 1}}),
    ?assertEqual(normal, ash_node:down(Mon, 2000)).

monitor_dead_pid_noproc(Config) ->
    Pid = mk(Config, 1),
    ok = ?REQ({destroy, ?config(res, Config), #{id => 1}}),
    Mon = erlang:monitor(process, Pid),
    ?assertEqual(noproc, ash_node:down(Mon, 10000)).

call_dead_pid_noproc_promptly(Config) ->
    Pid = mk(Config, 1),
    ok = ?REQ({destroy, ?config(res, Config), #{id => 1}}),
    %% promptly: noproc, not the call's (long) timeout
    Result = (catch gen_server:call(Pid, get, 30000)),
    ct:log("call to a destroyed record: ~p", [Result]),
    ?assertMatch({'EXIT', {noproc, {gen_server, call, _}}}, Result),
    %% a cast to it is silently dropped
    ok = gen_server:cast(Pid, keep_alive),
    ?assertEqual(pong, ?REQ(ping)).

demonitor(Config) ->
    Pid = mk(Config, 1),
    Mon = erlang:monitor(process, Pid),
    ?assert(erlang:demonitor(Mon)),
    %% a second monitor, kept, so we know when the DOWN would have come
    Mon2 = erlang:monitor(process, Pid),
    ok = ?REQ({destroy, ?config(res, Config), #{id => 1}}),
    ?assertEqual(normal, ash_node:down(Mon2, 2000)),
    ash_node:no_down(Mon, 100).

many_monitors(Config) ->
    Pid = mk(Config, 1),
    Mons = [erlang:monitor(process, Pid) || _ <- lists:seq(1, 100)],
    Parent = self(),
    Others = [spawn(fun() ->
                            M = erlang:monitor(process, Pid),
                            Parent ! {monitoring, self()},
                            receive {'DOWN', M, process, Pid, Why} -> Parent ! {down, self(), Why}
                            after 5000 -> Parent ! {down, self(), timeout}
                            end
                    end) || _ <- lists:seq(1, 20)],
    [receive {monitoring, O} -> ok after 2000 -> ct:fail(monitor_not_set) end || O <- Others],
    _ = gen_server:call(Pid, get),
    ok = ?REQ({destroy, ?config(res, Config), #{id => 1}}),
    [?assertEqual(normal, ash_node:down(M, 2000)) || M <- Mons],
    [receive {down, O, Why} -> ?assertEqual(normal, Why) after 3000 -> ct:fail(no_down) end
     || O <- Others].

linked_process_abnormal_exit_restarts_record(Config) ->
    Pid = mk(Config, 1),
    Last = updates(Config, 1, 3),
    Mon = erlang:monitor(process, Pid),
    L = linker(Pid, false),
    L ! {exit, boom},
    ?assertEqual(boom, ash_node:down(Mon, 2000)),
    New = restarted(Config, 1, Pid),
    ?assertNotEqual(Pid, New),
    ?assertEqual({ok, Last}, ?REQ({get, ?config(res, Config), #{id => 1}})),
    ?assertEqual({ok, Last}, gen_server:call(New, get, 2000)),
    ?assertMatch({ok, #{count := 1}}, ?REQ({info, ?config(res, Config)})).

destroy_sends_exit_normal_to_links(Config) ->
    Pid = mk(Config, 1),
    L = linker(Pid, true),
    ok = ?REQ({destroy, ?config(res, Config), #{id => 1}}),
    ?assertEqual({Pid, normal}, got_exit(L, 2000)),
    L ! stop.

exit_kill_restarts_with_last_state(Config) ->
    Pid = mk(Config, 1),
    Last = updates(Config, 1, 4),
    Mon = erlang:monitor(process, Pid),
    L = linker(Pid, true),
    exit(Pid, kill),
    ?assertEqual(killed, ash_node:down(Mon, 2000)),
    ?assertEqual({Pid, killed}, got_exit(L, 2000)),
    New = restarted(Config, 1, Pid),
    ?assertEqual({ok, Last}, ?REQ({get, ?config(res, Config), #{id => 1}})),
    %% the new pid is a working record process, and the old one is gone
    ?assertEqual({ok, Last#{n => 5}}, gen_server:call(New, {update, #{n => 5}}, 2000)),
    ?assertMatch({'EXIT', {noproc, _}}, catch gen_server:call(Pid, get, 2000)),
    L ! stop.

exit_custom_reason_restarts(Config) ->
    Pid = mk(Config, 1),
    Last = updates(Config, 1, 2),
    Mon = erlang:monitor(process, Pid),
    exit(Pid, {custom, reason}),
    ?assertEqual({custom, reason}, ash_node:down(Mon, 2000)),
    _ = restarted(Config, 1, Pid),
    ?assertEqual({ok, Last}, ?REQ({get, ?config(res, Config), #{id => 1}})).

exit_normal_ignored(Config) ->
    Pid = mk(Config, 1),
    Mon = erlang:monitor(process, Pid),
    exit(Pid, normal),
    ash_node:no_down(Mon, 300),
    ?assertEqual({ok, Pid}, whereis_(Config, 1)),
    ?assertEqual({ok, #{id => 1, n => 0}}, gen_server:call(Pid, get, 2000)).

exit_shutdown_removes_record(Config) ->
    Pid = mk(Config, 1),
    _ = mk(Config, 2),
    Mon = erlang:monitor(process, Pid),
    exit(Pid, shutdown),
    ?assertEqual(shutdown, ash_node:down(Mon, 2000)),
    ash_node:await(record_removed,
                   fun() -> whereis_(Config, 1) =:= {error, not_found} end, 2000),
    ?assertEqual({error, not_found}, ?REQ({get, ?config(res, Config), #{id => 1}})),
    ?assertMatch({ok, #{count := 1}}, ?REQ({info, ?config(res, Config)})),
    ?assertEqual({ok, #{id => 2, n => 0}}, ?REQ({get, ?config(res, Config), #{id => 2}})).

exit_shutdown_tuple_removes_record(Config) ->
    Pid = mk(Config, 1),
    Mon = erlang:monitor(process, Pid),
    L = linker(Pid, true),
    exit(Pid, {shutdown, bye}),
    ?assertEqual({shutdown, bye}, ash_node:down(Mon, 2000)),
    ?assertEqual({Pid, {shutdown, bye}}, got_exit(L, 2000)),
    ash_node:await(record_removed,
                   fun() -> whereis_(Config, 1) =:= {error, not_found} end, 2000),
    ?assertEqual({error, not_found}, ?REQ({get, ?config(res, Config), #{id => 1}})),
    L ! stop.

unlink_stops_propagation(Config) ->
    Pid = mk(Config, 1),
    Mon = erlang:monitor(process, Pid),
    L = linker(Pid, false),
    L ! unlink,
    receive {L, unlinked} -> ok after 2000 -> ct:fail(not_unlinked) end,
    L ! {exit, boom},
    ash_node:no_down(Mon, 300),
    ?assertEqual({ok, Pid}, whereis_(Config, 1)),
    %% and the record no longer tells the old linker about its death
    L2 = linker(Pid, true),
    L2 ! unlink,
    receive {L2, unlinked} -> ok after 2000 -> ct:fail(not_unlinked) end,
    ok = ?REQ({destroy, ?config(res, Config), #{id => 1}}),
    ?assertEqual(normal, ash_node:down(Mon, 2000)),
    ?assertEqual(no_exit, got_exit(L2, 300)),
    L2 ! stop.

%% Linking to a pid that is gone gives an immediate exit signal noproc, like any process.
link_to_dead_record_pid(Config) ->
    Pid = mk(Config, 1),
    ok = ?REQ({destroy, ?config(res, Config), #{id => 1}}),
    Parent = self(),
    L = spawn(fun() ->
                      process_flag(trap_exit, true),
                      link(Pid),
                      receive {'EXIT', Pid, Why} -> Parent ! {self(), Why}
                      after 2000 -> Parent ! {self(), no_exit}
                      end
              end),
    receive {L, Why} -> ?assertEqual(noproc, Why) after 3000 -> ct:fail(no_answer) end.

%% ---------------------------------------------------------------------------------------------
%% other erl nodes

peer_monitor_gets_down(Config) ->
    Node = ?config(node, Config),
    Pid = mk(Config, 1),
    {Peer, _} = ash_node:start_peer("dist_mon", #{}),
    try
        Watcher = peer_watcher(Peer, Pid),
        ok = ?REQ({destroy, ?config(res, Config), #{id => 1}}),
        ?assertEqual({down, normal}, peer_result(Peer, Watcher)),
        ?assertEqual(pong, ash_node:peer_call(Peer, gen_server, call,
                                              [{ash_gen_server, Node}, ping, 2000]))
    after
        ash_node:stop_peer(Peer)
    end.

%% On the peer: a process monitoring Pid, which remembers the DOWN reason. Returns once the
%% monitor is in place (a call to Pid from the same process has been answered).
peer_watcher(Peer, Pid) ->
    ash_node:peer_call(
      Peer, erlang, apply,
      [fun() ->
               Parent = self(),
               W = spawn(fun() ->
                                 M = erlang:monitor(process, Pid),
                                 _ = (catch gen_server:call(Pid, get, 2000)),
                                 Parent ! {watching, self()},
                                 receive {'DOWN', M, process, _, Why} ->
                                         receive {ask, From} -> From ! {down, Why} end
                                 after 5000 ->
                                         receive {ask, From} -> From ! no_down end
                                 end
                         end),
               receive {watching, W} -> W after 5000 -> not_watching end
       end, []]).

peer_result(Peer, Watcher) ->
    ash_node:peer_call(Peer, erlang, apply,
                       [fun() ->
                                Watcher ! {ask, self()},
                                receive R -> R after 6000 -> no_answer end
                        end, []]).

%% A peer node links to and monitors records, then goes away: the node drops them, the records
%% live on, untouched (same pids), and destroying them later harms nothing.
peer_disconnect_drops_links_and_monitors(Config) ->
    peer_goes_away(Config, fun(Peer) -> ash_node:stop_peer(Peer) end).

peer_killed_drops_links_and_monitors(Config) ->
    peer_goes_away(Config,
                   fun(Peer) ->
                           OsPid = ash_node:peer_call(Peer, os, getpid, []),
                           ash_node:os_kill("KILL", OsPid),
                           ash_node:stop_peer(Peer)
                   end).

peer_goes_away(Config, Kill) ->
    Node = ?config(node, Config),
    A = mk(Config, 1),
    B = mk(Config, 2),
    Last = updates(Config, 1, 2),
    MonA = erlang:monitor(process, A),
    MonB = erlang:monitor(process, B),
    {Peer, PeerNode} = ash_node:start_peer("dist_gone", #{}),
    Ready = ash_node:peer_call(Peer, erlang, apply,
                               [fun() ->
                                        Parent = self(),
                                        spawn(fun() ->
                                                      link(A),
                                                      erlang:monitor(process, B),
                                                      erlang:monitor(process, {ash_gen_server, Node}),
                                                      pong = gen_server:call(
                                                               {ash_gen_server, Node}, ping, 2000),
                                                      _ = gen_server:call(A, get, 2000),
                                                      _ = gen_server:call(B, get, 2000),
                                                      Parent ! ready,
                                                      receive never -> ok end
                                              end),
                                        receive ready -> ready after 5000 -> timeout end
                                end, []]),
    ?assertEqual(ready, Ready),
    ?assert(ash_node:wait_log(?config(rust, Config), [atom_to_binary(PeerNode), <<"connected">>],
                              2000) =/= []),
    Kill(Peer),
    ?assertNotEqual([], ash_node:wait_log(?config(rust, Config),
                                          [<<"peer disconnected">>, atom_to_binary(PeerNode)],
                                          5000)),
    ash_node:no_down(MonA, 300),
    ash_node:no_down(MonB, 0),
    ?assertEqual({ok, A}, whereis_(Config, 1)),
    ?assertEqual({ok, B}, whereis_(Config, 2)),
    ?assertEqual({ok, Last}, gen_server:call(A, get, 2000)),
    ok = ?REQ({destroy, ?config(res, Config), #{id => 1}}),
    ok = ?REQ({destroy, ?config(res, Config), #{id => 2}}),
    ?assertEqual(normal, ash_node:down(MonA, 2000)),
    ?assertEqual(normal, ash_node:down(MonB, 2000)),
    ?assertEqual(pong, ?REQ(ping)).

%% What a wrong disconnect handling costs: with max_restarts 0, a record a peer node had linked
%% to must survive the peer going away.
peer_disconnect_loses_no_record(Config) ->
    R = ash_node:uniq_res(no_restarts),
    ok = ?REQ({define, R, #{primary_key => [id], max_restarts => 0}}),
    {ok, _} = ?REQ({create, R, #{id => 1, precious => true}}),
    {ok, Pid} = ?REQ({whereis, R, #{id => 1}}),
    {Peer, PeerNode} = ash_node:start_peer("dist_link0", #{}),
    ready = ash_node:peer_call(Peer, erlang, apply,
                               [fun() ->
                                        Parent = self(),
                                        spawn(fun() ->
                                                      link(Pid),
                                                      {ok, _} = gen_server:call(Pid, get, 2000),
                                                      Parent ! ready,
                                                      receive never -> ok end
                                              end),
                                        receive ready -> ready after 5000 -> timeout end
                                end, []]),
    ash_node:stop_peer(Peer),
    ?assertNotEqual([], ash_node:wait_log(?config(rust, Config),
                                          [<<"peer disconnected">>, atom_to_binary(PeerNode)],
                                          5000)),
    timer:sleep(100),
    ?assertEqual({ok, #{id => 1, precious => true}}, ?REQ({get, R, #{id => 1}})),
    ?assertEqual({ok, Pid}, ?REQ({whereis, R, #{id => 1}})).

%% When the node itself goes away, monitors on its processes and names fire with noconnection.
node_stop_downs_monitors(Config) ->
    N2 = ash_node:start(Config, #{tag => "dist_stop"}),
    Node2 = ash_node:node(N2),
    R = ?config(res, Config),
    ok = ash_node:call(Node2, {define, R, #{primary_key => [id]}}),
    {ok, _} = ash_node:call(Node2, {create, R, #{id => 1}}),
    {ok, Pid} = ash_node:call(Node2, {whereis, R, #{id => 1}}),
    MonPid = erlang:monitor(process, Pid),
    MonName = erlang:monitor(process, {ash_gen_server, Node2}),
    0 = ash_node:stop(N2),
    ?assertEqual(noconnection, ash_node:down(MonPid, 10000)),
    ?assertEqual(noconnection, ash_node:down(MonName, 10000)),
    %% the node is gone: a call fails as nodedown (not as a timeout, nor any error)
    ?assertMatch({'EXIT', {{nodedown, Node2}, {gen_server, call, _}}},
                 catch ash_node:call(Node2, ping, 30000)).
