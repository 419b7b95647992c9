%% Net ticks: with net_ticktime 4 on both sides, an idle connection stays up (the node ticks and
%% accepts ticks), and a peer that goes silent (SIGSTOP) is dropped by the node after about
%% net_ticktime. The test VM itself keeps the default ticktime, so only peer nodes started with
%% `-kernel net_ticktime 4` talk to the node here.
-module(ash_ticks_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(TICKTIME, 4).

all() ->
    [{group, ticks}].

groups() ->
    [{ticks, [parallel], [idle_connection_stays_up, silent_peer_is_dropped]}].

init_per_suite(Config) ->
    ash_node:start_suite(Config, #{tag => "ticks", ping => false,
                                   args => ["--net-ticktime", integer_to_list(?TICKTIME)]}).

end_per_suite(Config) ->
    ash_node:stop_suite(Config).

init_per_group(_, Config) -> Config.
end_per_group(_, _) -> ok.

%% ---------------------------------------------------------------------------------------------

%% A peer with net_ticktime 4, connected to the node, recording node up/down events.
tick_peer(Config, Tag) ->
    Node = ?config(node, Config),
    {Peer, PeerNode} = ash_node:start_peer(Tag, #{args => ["-kernel", "net_ticktime",
                                                          integer_to_list(?TICKTIME)]}),
    ?assertEqual(?TICKTIME, ash_node:peer_call(Peer, net_kernel, get_net_ticktime, [])),
    ok = ash_node:peer_call(Peer, erlang, apply, [fun start_watcher/0, []]),
    Pong = ash_node:peer_call(Peer, erlang, apply,
                              [fun() ->
                                       Deadline = erlang:monotonic_time(millisecond) + 10000,
                                       (fun Loop() ->
                                                case net_adm:ping(Node) of
                                                    pong -> pong;
                                                    pang ->
                                                        case erlang:monotonic_time(millisecond) > Deadline of
                                                            true -> pang;
                                                            false -> timer:sleep(50), Loop()
                                                        end
                                                end
                                        end)()
                               end, []]),
    ?assertEqual(pong, Pong),
    ?assert(lists:member(Node, ash_node:peer_call(Peer, erlang, nodes, [hidden]))),
    {Peer, PeerNode}.

start_watcher() ->
    Parent = self(),
    W = spawn(fun() ->
                      ok = net_kernel:monitor_nodes(true, [{node_type, all}]),
                      Parent ! ready,
                      watch([])
              end),
    register(tick_watcher, W),
    receive ready -> ok after 2000 -> error(watcher_not_ready) end.

watch(Events) ->
    receive
        {ask, From} -> From ! {events, lists:reverse(Events)}, watch(Events);
        Event -> watch([{erlang:monotonic_time(millisecond), Event} | Events])
    end.

events(Peer) ->
    ash_node:peer_call(Peer, erlang, apply,
                       [fun() ->
                                tick_watcher ! {ask, self()},
                                receive {events, E} -> E after 2000 -> no_answer end
                        end, []]).

downs(Events, Node) ->
    [E || {_, {nodedown, N, _}} = E <- Events, N =:= Node].

%% ---------------------------------------------------------------------------------------------

idle_connection_stays_up(Config) ->
    Node = ?config(node, Config),
    {Peer, PeerNode} = tick_peer(Config, "tick_idle"),
    try
        %% 1.5 x net_ticktime of silence on the distribution channel
        timer:sleep(round(?TICKTIME * 1500)),
        Events = events(Peer),
        ct:log("events on the idle peer: ~p", [Events]),
        ?assertEqual([], downs(Events, Node)),
        ?assert(lists:member(Node, ash_node:peer_call(Peer, erlang, nodes, [hidden]))),
        ?assertEqual(pong, ash_node:peer_call(Peer, gen_server, call,
                                              [{ash_gen_server, Node}, ping, 2000])),
        ?assertEqual([], ash_node:log_contains(?config(rust, Config),
                                               [<<"peer disconnected">>,
                                                atom_to_binary(PeerNode)]))
    after
        ash_node:stop_peer(Peer)
    end.

silent_peer_is_dropped(Config) ->
    {Peer, PeerNode} = tick_peer(Config, "tick_silent"),
    OsPid = ash_node:peer_call(Peer, os, getpid, []),
    try
        T0 = erlang:monotonic_time(millisecond),
        ash_node:os_kill("STOP", OsPid),
        %% a bounded wait for the event (how soon is a speed figure, not asserted)
        Lines = ash_node:wait_log(?config(rust, Config),
                                  [<<"peer disconnected">>, atom_to_binary(PeerNode)],
                                  (?TICKTIME + 30) * 1000),
        Elapsed = erlang:monotonic_time(millisecond) - T0,
        ash_node:os_kill("CONT", OsPid),
        ct:log("dropped after ~b ms: ~p", [Elapsed, Lines]),
        %% one line, saying why, and not before the peer had been silent for net_ticktime
        ?assertMatch([_], Lines),
        ?assertNotEqual(nomatch, binary:match(hd(Lines), <<"net_ticktime">>)),
        ?assert(Elapsed >= (?TICKTIME - 1) * 1000),
        %% the peer notices too once it runs again, and can connect afresh
        Node = ?config(node, Config),
        ash_node:await(peer_sees_nodedown,
                       fun() -> downs(events(Peer), Node) =/= [] end, 5000),
        ?assertEqual(pong, ash_node:peer_call(Peer, net_adm, ping, [Node]))
    after
        ash_node:os_kill("CONT", OsPid),
        ash_node:stop_peer(Peer)
    end.
