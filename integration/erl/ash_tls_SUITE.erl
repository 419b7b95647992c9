%% TLS distribution (`--proto-dist inet_tls --ssl-dist-optfile F`) against real
%% `erl -proto_dist inet_tls -ssl_dist_optfile F` nodes, with one option file for all of them:
%% a TLS peer calls the node, the node dials a TLS peer with --join, `ash-gen-server call` goes
%% over TLS; a plain TCP peer, a peer with a certificate from an untrusted CA, a peer without a
%% certificate and a server with an untrusted certificate are refused with a reason in the log;
%% a bad option file stops the start.
%%
%% The certificates are made in priv_dir by integration/tls_certs.sh (openssl). This test VM
%% runs plain TCP, so everything TLS happens on peer nodes started with the TLS flags (their
%% control connection is stdio).
-module(ash_tls_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(LOG_WAIT, 10000).

all() ->
    [peer_calls_the_node_over_tls,
     tls13_both_ways,
     node_joins_a_peer_over_tls,
     call_command_over_tls,
     plain_tcp_peer_is_refused,
     untrusted_certificate_is_refused,
     peer_without_a_certificate_is_refused,
     node_refuses_an_untrusted_server,
     bad_option_files_stop_the_start,
     option_file_notes_are_logged].

init_per_suite(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "tls"),
    Certs = ash_node:tls_certs(Dir),
    #{optfile := Good, ca := Ca, rogue := Rogue, rogue_key := RogueKey} = Certs,
    %% A peer whose certificate comes from the untrusted CA (it trusts our CA itself).
    RogueConf = optfile(Dir, "rogue.conf",
                        [{certfile, Rogue}, {keyfile, RogueKey}, {cacertfile, Ca},
                         {verify, verify_peer}]),
    %% A peer presenting no certificate as a client.
    NoCertConf = optfile(Dir, "nocert.conf",
                         [{certfile, maps:get(node, Certs)}, {keyfile, maps:get(node_key, Certs)},
                          {cacertfile, Ca}, {verify, verify_peer}],
                         [{cacertfile, Ca}, {verify, verify_peer}]),
    %% The same with TLS 1.3 first (OTP's default for distribution is TLS 1.2 only).
    {ok, [GoodTerms]} = file:consult(Good),
    Tls13 = [{versions, ['tlsv1.3', 'tlsv1.2']}],
    Tls13Conf = optfile(Dir, "tls13.conf", proplists:get_value(server, GoodTerms) ++ Tls13,
                        proplists:get_value(client, GoodTerms) ++ Tls13),
    Config1 = [{certs, Certs}, {good, Good}, {rogue_conf, RogueConf}, {nocert_conf, NoCertConf},
               {tls13_conf, Tls13Conf} | Config],
    ash_node:start_suite(Config1, #{tag => "tls", tls => Good}).

end_per_suite(Config) ->
    ash_node:stop_suite(Config).

%% ---------------------------------------------------------------------------------------------

optfile(Dir, Name, Opts) -> optfile(Dir, Name, Opts, Opts).

optfile(Dir, Name, Server, Client) ->
    File = filename:join(Dir, Name),
    ok = file:write_file(File, io_lib:format("~p.~n", [[{server, Server}, {client, Client}]])),
    File.

tls_peer(Config, Tag, ConfKey) ->
    ash_node:start_peer(Tag, #{tls => ?config(ConfKey, Config)}).

pcall(Peer, Node, Req) ->
    ash_node:peer_call(Peer, gen_server, call, [{ash_gen_server, Node}, Req, 5000]).

%% Lines of the node's log with every pattern, appearing after the first Skip of them.
refusals(N) ->
    ash_node:log_contains(N, [<<"refused an incoming connection">>]).

wait_new_refusal(N, Before, Pattern) ->
    ash_node:await(
      {refusal_logged, Pattern},
      fun() ->
              New = lists:nthtail(length(Before), refusals(N)),
              lists:any(fun(L) -> binary:match(L, Pattern) =/= nomatch end, New)
      end, ?LOG_WAIT),
    New = lists:nthtail(length(Before), refusals(N)),
    ct:log("refusal: ~s", [lists:last(New)]),
    New.

%% ---------------------------------------------------------------------------------------------

peer_calls_the_node_over_tls(Config) ->
    Node = ?config(node, Config),
    {Peer, PeerNode} = tls_peer(Config, "tls_caller", good),
    try
        ?assertEqual(pong, ash_node:peer_call(Peer, net_adm, ping, [Node])),
        Res = ash_node:uniq_res(tls_user),
        ok = pcall(Peer, Node, {define, Res, #{primary_key => [id]}}),
        ?assertEqual({ok, #{id => 1, name => <<"ann">>, age => 40}},
                     pcall(Peer, Node, {create, Res, #{id => 1, name => <<"ann">>, age => 40}})),
        ?assertEqual({ok, #{id => 1, name => <<"ann">>, age => 40}},
                     pcall(Peer, Node, {get, Res, #{id => 1}})),
        {ok, _} = pcall(Peer, Node, {create, Res, #{id => 2, name => <<"bob">>, age => 20}}),
        ?assertMatch({ok, [#{id := 1}]},
                     pcall(Peer, Node, {query, Res, #{filter => {gt, age, 30}}})),
        %% A value larger than a TLS record, both ways.
        Big = binary:copy(<<"0123456789">>, 100000),
        {ok, _} = pcall(Peer, Node, {create, Res, #{id => 3, big => Big}}),
        ?assertEqual({ok, #{id => 3, big => Big}}, pcall(Peer, Node, {get, Res, #{id => 3}})),
        %% A record pid works over the same connection: monitors travel too.
        {ok, Pid} = pcall(Peer, Node, {whereis, Res, #{id => 2}}),
        Reason = ash_node:peer_call(
                   Peer, erlang, apply,
                   [fun() ->
                            Mon = erlang:monitor(process, Pid),
                            ok = gen_server:call({ash_gen_server, Node}, {destroy, Res, #{id => 2}}),
                            receive {'DOWN', Mon, process, Pid, R} -> R after 5000 -> no_down end
                    end, []]),
        %% destroyed: the record process ends `normal` (PROTOCOL.md "Record processes")
        ?assertEqual(normal, Reason),
        ?assert(lists:member(Node, ash_node:peer_call(Peer, erlang, nodes, [hidden]))),
        ?assertNotEqual([], ash_node:wait_log(?config(rust, Config),
                                              [<<"peer connected">>, atom_to_binary(PeerNode),
                                               <<"tls=TLSv1_2">>], ?LOG_WAIT))
    after
        ash_node:stop_peer(Peer)
    end.

%% With versions ['tlsv1.3', 'tlsv1.2'] on both sides, TLS 1.3 it is, in both directions.
tls13_both_ways(Config) ->
    {Peer, PeerNode} = tls_peer(Config, "tls13_peer", tls13_conf),
    N = ash_node:start(Config, #{tag => "tls13", tls => ?config(tls13_conf, Config),
                                 args => ["--join", atom_to_list(PeerNode)]}),
    Node = ash_node:node(N),
    try
        ?assertNotEqual([], ash_node:wait_log(N, [<<"peer connected">>, atom_to_binary(PeerNode),
                                                  <<"tls=TLSv1_3">>], ?LOG_WAIT)),
        Res = ash_node:uniq_res(tls13),
        ok = pcall(Peer, Node, {define, Res, #{primary_key => [id]}}),
        {ok, _} = pcall(Peer, Node, {create, Res, #{id => 1}}),
        ?assertEqual({ok, #{id => 1}}, pcall(Peer, Node, {get, Res, #{id => 1}})),
        %% The peer dialling in (after the node's connection is gone) gets TLS 1.3 too.
        true = ash_node:peer_call(Peer, erlang, disconnect_node, [Node]),
        ?assertEqual(pong, ash_node:peer_call(Peer, net_adm, ping, [Node])),
        ash_node:await(second_tls13_connection,
                       fun() ->
                               length(ash_node:log_contains(
                                        N, [<<"peer connected">>, atom_to_binary(PeerNode),
                                            <<"tls=TLSv1_3">>])) >= 2
                       end, ?LOG_WAIT)
    after
        ash_node:stop(N),
        ash_node:stop_peer(Peer)
    end.

node_joins_a_peer_over_tls(Config) ->
    {Peer, PeerNode} = tls_peer(Config, "tls_target", good),
    J = ash_node:start(Config, #{tag => "tls_join", tls => ?config(good, Config),
                                 args => ["--join", atom_to_list(PeerNode)]}),
    JNode = ash_node:node(J),
    try
        ?assertNotEqual([], ash_node:wait_log(J, [<<"joined">>, atom_to_binary(PeerNode)],
                                              ?LOG_WAIT)),
        %% The node dialled: the peer lists it before calling it at all.
        ?assert(lists:member(JNode, ash_node:peer_call(Peer, erlang, nodes, [hidden]))),
        ?assertNotEqual([], ash_node:log_contains(J, [<<"peer connected">>,
                                                      atom_to_binary(PeerNode), <<"tls=">>])),
        {ok, Stats} = pcall(Peer, JNode, stats),
        ?assertEqual(1, maps:get(connections, Stats)),
        ?assertEqual(pong, pcall(Peer, JNode, ping))
    after
        ash_node:stop(J),
        ash_node:stop_peer(Peer)
    end.

call_command_over_tls(Config) ->
    Node = atom_to_list(?config(node, Config)),
    Good = ?config(good, Config),
    Cookie = atom_to_list(erlang:get_cookie()),
    Res = atom_to_list(ash_node:uniq_res(tls_cli)),
    Call = fun(Tls, Req) ->
                   ash_node:run_bin(["call", "--node", Node, "--cookie", Cookie | Tls] ++ [Req],
                                    20000)
           end,
    TlsFlags = ["--proto-dist", "inet_tls", "--ssl-dist-optfile", Good],
    {0, Ok} = Call(TlsFlags, "{define, " ++ Res ++ ", #{primary_key => [id]}}"),
    ?assertMatch({match, _}, re:run(Ok, <<"^ok$">>, [multiline])),
    {0, _} = Call(TlsFlags, "{create, " ++ Res ++ ", #{id => 7, name => <<\"cli\">>}}"),
    {0, Got} = Call(TlsFlags, "{get, " ++ Res ++ ", #{id => 7}}"),
    ?assertMatch({match, _}, re:run(Got, <<"\\{ok,#\\{id => 7,name => <<\"cli\">>\\}\\}">>)),
    %% Without the flags, the node's TLS refuses the plain handshake.
    {Status, Plain} = Call([], "{get, " ++ Res ++ ", #{id => 7}}"),
    ct:log("plain call: ~p ~s", [Status, Plain]),
    ?assertNotEqual(0, Status),
    %% Half the flags is an error before anything is dialled.
    {1, Half} = Call(["--proto-dist", "inet_tls"], "ping"),
    ?assertMatch({match, _}, re:run(Half, <<"needs --ssl-dist-optfile">>)).

plain_tcp_peer_is_refused(Config) ->
    N = ?config(rust, Config),
    Before = refusals(N),
    {Peer, _} = ash_node:start_peer("tls_plain", #{}),
    try
        ?assertEqual(pang, ash_node:peer_call(Peer, net_adm, ping, [?config(node, Config)])),
        wait_new_refusal(N, Before, <<"does not speak TLS">>)
    after
        ash_node:stop_peer(Peer)
    end.

untrusted_certificate_is_refused(Config) ->
    N = ?config(rust, Config),
    Before = refusals(N),
    {Peer, _} = tls_peer(Config, "tls_rogue", rogue_conf),
    try
        ?assertEqual(pang, ash_node:peer_call(Peer, net_adm, ping, [?config(node, Config)])),
        wait_new_refusal(N, Before, <<"invalid peer certificate: UnknownIssuer">>)
    after
        ash_node:stop_peer(Peer)
    end.

peer_without_a_certificate_is_refused(Config) ->
    N = ?config(rust, Config),
    Before = refusals(N),
    {Peer, _} = tls_peer(Config, "tls_nocert", nocert_conf),
    try
        ?assertEqual(pang, ash_node:peer_call(Peer, net_adm, ping, [?config(node, Config)])),
        wait_new_refusal(N, Before, <<"peer sent no certificates">>)
    after
        ash_node:stop_peer(Peer)
    end.

node_refuses_an_untrusted_server(Config) ->
    {Peer, PeerNode} = tls_peer(Config, "tls_rogue_srv", rogue_conf),
    J = ash_node:start(Config, #{tag => "tls_join_rogue", tls => ?config(good, Config),
                                 args => ["--join", atom_to_list(PeerNode)]}),
    try
        Lines = ash_node:wait_log(J, [<<"could not join">>, atom_to_binary(PeerNode)], ?LOG_WAIT),
        ct:log("~p", [Lines]),
        ?assertMatch([_ | _], Lines),
        ?assertNotEqual(nomatch, binary:match(hd(Lines), <<"UnknownIssuer">>)),
        ?assertNot(lists:member(ash_node:node(J),
                                ash_node:peer_call(Peer, erlang, nodes, [hidden])))
    after
        ash_node:stop(J),
        ash_node:stop_peer(Peer)
    end.

bad_option_files_stop_the_start(Config) ->
    Dir = filename:dirname(?config(good, Config)),
    Start = fun(OptFile) ->
                    Name = ash_node:uniq("tls_bad") ++ "@127.0.0.1",
                    ash_node:run_bin(["start", "--name", Name, "--cookie", "x",
                                      "--proto-dist", "inet_tls", "--ssl-dist-optfile", OptFile],
                                     20000)
            end,
    Unknown = optfile(Dir, "unknown.conf", [{certfile, "x.pem"}, {no_such_option, 1}]),
    {1, Out1} = Start(Unknown),
    ?assertNotEqual(nomatch, binary:match(Out1, <<"unknown server option: no_such_option">>)),
    Missing = optfile(Dir, "missing.conf", [{certfile, "/nonexistent/node.pem"}]),
    {1, Out2} = Start(Missing),
    ?assertNotEqual(nomatch, binary:match(Out2, <<"certfile /nonexistent/node.pem">>)),
    {1, Out3} = Start(filename:join(Dir, "no_such_file.conf")),
    ?assertNotEqual(nomatch, binary:match(Out3, <<"cannot read">>)),
    ct:log("~s~n~s~n~s", [Out1, Out2, Out3]).

%% The suite's option file has `secure_renegotiate` on both sides, an option OTP takes that
%% means nothing here: the node started with it and logged a note for each side.
option_file_notes_are_logged(Config) ->
    N = ?config(rust, Config),
    [?assertMatch([_ | _], ash_node:log_contains(
                             N, [<<"ssl_dist_optfile: not needed: this node never renegotiates">>,
                                 <<"option=secure_renegotiate">>, Side]))
     || Side <- [<<"side=server">>, <<"side=client">>]].
