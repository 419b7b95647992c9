%% Bad input of every kind: malformed requests, stray messages, raw TCP garbage before and after
%% the handshake, wrong cookies both ways, signals. The node must answer or drop, never die.
-module(ash_robustness_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(REQ(R), ash_node:req(Config, R)).

all() ->
    [malformed_requests_barrage, unknown_resource_call, non_call_messages_ignored,
     record_pid_garbage, raw_handshake_positive_control, raw_wrong_cookie,
     raw_missing_flags_refused, raw_garbage_before_handshake, raw_silent_client_does_no_harm,
     raw_garbage_after_handshake_bad_tag, raw_replies_before_a_broken_frame, raw_garbage_after_handshake_bad_terms,
     raw_oversized_frame, reply_to_unreachable_caller, deep_request, small_limits_take_effect,
     big_values,
     concurrent_clients, wrong_cookie_erl_peer, join_with_wrong_and_right_cookie,
     stops_on_sigterm, stops_on_sigint].

init_per_suite(Config) ->
    ash_node:start_suite(Config, #{tag => "robust"}).

end_per_suite(Config) ->
    ash_node:stop_suite(Config).

init_per_testcase(TC, Config) ->
    R = ash_node:uniq_res(TC),
    ok = ash_node:req(Config, {define, R, #{primary_key => [id]}}),
    Recs = [#{id => I, v => {I, <<"payload">>}} || I <- lists:seq(1, 5)],
    [{ok, Rec} = ash_node:req(Config, {create, R, Rec}) || Rec <- Recs],
    %% any disconnect of our own connection during the case is a failure
    true = erlang:monitor_node(?config(node, Config), true),
    [{res, R}, {recs, Recs} | Config].

end_per_testcase(_TC, Config) ->
    Node = ?config(node, Config),
    erlang:monitor_node(Node, false),
    receive
        {nodedown, Node} -> {fail, {our_connection_to_the_node_dropped, Node}}
    after 0 ->
            case ash_node:alive(?config(rust, Config)) of
                true -> ok;
                false -> {fail, node_process_died}
            end
    end.

%% The node still serves and the records made in init_per_testcase are untouched.
assert_healthy(Config) ->
    R = ?config(res, Config),
    ?assert(ash_node:alive(?config(rust, Config))),
    ?assertEqual(pong, ?REQ(ping)),
    {ok, Got} = ?REQ({query, R, #{sort => [{id, asc}]}}),
    ?assertEqual(?config(recs, Config), Got),
    ?assertMatch({ok, #{count := 5}}, ?REQ({info, R})).

bad_request({error, {bad_request, Msg}}) when is_binary(Msg), byte_size(Msg) > 0 ->
    is_list(unicode:characters_to_list(Msg));
bad_request(_) -> false.

%% ---------------------------------------------------------------------------------------------

malformed_requests_barrage(Config) ->
    R = ?config(res, Config),
    PK = #{id => 1},
    Malformed =
        [{define}, {define, R}, {define, R, #{primary_key => [id]}, x}, {define, R, x},
         {create}, {create, R}, {create, R, 1}, {create, R, [1, 2]}, {create, 1, #{id => 9}},
         {create, R, #{id => 9}, x, y}, {create, R, #{id => 9, "k" => 1}},
         {get}, {get, R}, {get, R, PK, x}, {get, R, 1}, {get, R, <<"id">>},
         {update, R}, {update, R, PK}, {update, R, PK, 5}, {update, R, PK, #{v => x}, 5},
         {update, R, PK, #{v => x}, #{filter => {nope}}},
         {update, R, PK, #{v => x}, #{}, extra, extra},
         {destroy}, {destroy, R}, {destroy, R, PK, #{}, x}, {destroy, R, PK, 7},
         {upsert, R}, {upsert, R, x, #{}}, {upsert, R, #{id => 9}, x},
         {bulk_create, R}, {bulk_create, R, x, #{}}, {bulk_create, R, [#{id => 9}], x},
         {query}, {query, R, x}, {query, R, #{}, x}, {query, R, #{filter => {eq}}},
         {query, R, #{sort => {v, asc}}}, {query, R, #{limit => -5}},
         {aggregate, R}, {aggregate, R, #{}}, {aggregate, R, #{}, x},
         {aggregate, R, #{}, [{n, frobnicate, v, #{}}]},
         {whereis, R}, {whereis, R, 1}, {keep_alive, R}, {keep_alive, R, PK, x},
         {info}, {info, 1}, {info, R, x}, {clear}, {clear, "r"}, {clear, R, x}],
    Unknown = [foo, {foo}, {foo, bar, baz}, 42, <<"ping">>, "ping", [], #{}, {}, {1, 2},
               {'DEFINE', R, #{}}, {getx, R, PK}, make_ref(), self(), 3.14,
               list_to_binary(lists:duplicate(100000, $g))],
    BadAnswers =
        [{Req, Reply} || Req <- Malformed,
                         Reply <- [?REQ(Req)],
                         not bad_request(Reply)] ++
        [{Req, Reply} || Req <- Unknown,
                         Reply <- [?REQ(Req)],
                         Reply =/= {error, {unknown_request, Req}}],
    [ct:log("~P~n -> ~P", [Req, 12, Reply, 12]) || {Req, Reply} <- BadAnswers],
    ?assertEqual([], [Req || {Req, _} <- BadAnswers]),
    %% nothing was created by the garbage
    ?assertEqual({error, not_found}, ?REQ({get, R, #{id => 9}})),
    assert_healthy(Config).

unknown_resource_call(Config) ->
    Ghost = ash_node:uniq_res(ghost),
    ?assertEqual({error, {unknown_resource, Ghost}}, ?REQ({get, Ghost, #{id => 1}})),
    ?assertEqual({error, {unknown_resource, Ghost}}, ?REQ({create, Ghost, #{id => 1}})),
    ?assertEqual({error, {unknown_resource, Ghost}}, ?REQ({query, Ghost, #{}})),
    {ok, Resources} = ?REQ(resources),
    ?assertNot(lists:member(Ghost, Resources)),
    assert_healthy(Config).

non_call_messages_ignored(Config) ->
    Node = ?config(node, Config),
    R = ?config(res, Config),
    Server = {ash_gen_server, Node},
    Ref = make_ref(),
    Garbage = [foo, {foo, bar}, 42, <<"bytes">>, [1, 2, 3], #{a => b},
               {'$gen_call', bad},
               {'$gen_call', {not_a_pid, Ref}, ping},
               {'$gen_call', {self(), Ref}},
               {'$gen_call', {self(), Ref}, ping, extra},
               {'$gen_call', self(), ping},
               {'$gen_cast', garbage}, {'$gen_cast'}, {'$gen_cast', {destroy, R, #{id => 1}}},
               {'$gen_cast', {clear, R}},
               {'EXIT', self(), kill}, {'DOWN', make_ref(), process, self(), normal},
               {system, {self(), Ref}, get_status},
               list_to_binary(lists:duplicate(200000, $z))],
    [Server ! G || G <- Garbage],
    %% to names and pids that do not exist, too
    [{Name, Node} ! hello || Name <- [nosuch_name, net_kernel_x, ash_gen_server_2]],
    {ok, Pid} = ?REQ({whereis, R, #{id => 5}}),
    ok = ?REQ({destroy, R, #{id => 5}}),
    Pid ! hello_dead_pid,
    {ok, _} = ?REQ({create, R, #{id => 5, v => {5, <<"payload">>}}}),
    ?assertEqual(pong, ?REQ(ping)),
    %% no reply to anything that was not a well-formed call
    ash_node:no_msg(fun({R0, _} = M) when R0 =:= Ref -> {true, M};
                       (_) -> false end, 200),
    assert_healthy(Config).

record_pid_garbage(Config) ->
    R = ?config(res, Config),
    {ok, Pid} = ?REQ({whereis, R, #{id => 1}}),
    [Pid ! G || G <- [foo, {foo, bar}, {'$gen_call', bad}, {'$gen_cast', bad},
                      {'$gen_call', {self(), make_ref()}}, <<"x">>]],
    ?assertEqual({error, {unknown_request, bogus_request}},
                 gen_server:call(Pid, bogus_request, 2000)),
    ?assert(bad_request(gen_server:call(Pid, {update, not_a_map}, 2000))),
    ?assert(bad_request(gen_server:call(Pid, {update, #{v => 1}, not_a_map}, 2000))),
    ok = gen_server:cast(Pid, bogus_cast),
    ?assertEqual({ok, #{id => 1, v => {1, <<"payload">>}}}, gen_server:call(Pid, get, 2000)),
    ?assertEqual({ok, Pid}, ?REQ({whereis, R, #{id => 1}})),
    assert_healthy(Config).

%% ---------------------------------------------------------------------------------------------
%% raw distribution

my_name(Tag) -> ash_node:uniq(Tag) ++ "@127.0.0.1".

cookie() -> atom_to_list(erlang:get_cookie()).

raw_handshake_positive_control(Config) ->
    Node = ?config(node, Config),
    R = ?config(res, Config),
    Me = my_name("raw_ok"),
    {ok, S, Peer} = ash_raw_dist:connect(Node, Me, cookie()),
    ?assertEqual(atom_to_binary(Node), maps:get(name, Peer)),
    %% a hidden node: it does not publish itself
    ?assertEqual(0, maps:get(flags, Peer) band 1),
    From = ash_raw_dist:fake_pid(Me, 1),
    ?assertEqual({ok, pong}, ash_raw_dist:call(S, From, ash_gen_server, ping)),
    ?assertEqual({ok, {ok, #{id => 2, v => {2, <<"payload">>}}}},
                 ash_raw_dist:call(S, From, ash_gen_server, {get, R, #{id => 2}})),
    %% net_kernel answers is_auth
    Ref = make_ref(),
    ok = ash_raw_dist:reg_send(S, From, net_kernel, {'$gen_call', {From, Ref}, {is_auth, Me}}),
    ?assertEqual({ok, {Ref, yes}}, ash_raw_dist:recv_msg(S, 2000)),
    gen_tcp:close(S),
    assert_healthy(Config).

raw_wrong_cookie(Config) ->
    Node = ?config(node, Config),
    Me = my_name("raw_badcookie"),
    Result = ash_raw_dist:connect(Node, Me, "definitely_not_the_cookie"),
    ?assertMatch({error, ack, _}, Result),
    ct:log("wrong cookie: ~p", [Result]),
    ?assertNotEqual([], ash_node:wait_log(?config(rust, Config), [<<"cookie">>], 2000)),
    assert_healthy(Config).

raw_missing_flags_refused(Config) ->
    Node = ?config(node, Config),
    Me = my_name("raw_noflags"),
    S = ash_raw_dist:connect_tcp(Node),
    Result = ash_raw_dist:handshake(S, Me, cookie(), 16#04 bor 16#1000000),
    ct:log("handshake without mandatory flags: ~p", [Result]),
    case Result of
        {ok, S, _} ->
            %% refused right after the handshake, at the latest
            ?assert(ash_raw_dist:closed_within(S, 2000));
        {error, _, _} ->
            ok
    end,
    gen_tcp:close(S),
    assert_healthy(Config).

raw_socket(Node) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, ash_raw_dist:port_of(Node),
                              [binary, {packet, raw}, {active, false}], 2000),
    S.

raw_garbage_before_handshake(Config) ->
    Node = ?config(node, Config),
    Http = <<"GET / HTTP/1.1\r\nHost: x\r\n\r\n">>,
    Variants =
        [{random, crypto:strong_rand_bytes(70000)},
         {unknown_tag, <<0, 5, "hello">>},
         {truncated_name, <<0, 1, $N>>},
         {short_name_message, <<0, 9, $N, 0, 0, 0, 0, 0, 0, 0, 0>>},
         {http, <<Http/binary, (binary:copy(<<" ">>, 16#4745))/binary>>},
         {name_without_at, begin
                               Name = <<"no_at_sign">>,
                               Body = <<$N, (ash_raw_dist:flags()):64, 1:32,
                                        (byte_size(Name)):16, Name/binary>>,
                               <<(byte_size(Body)):16, Body/binary>>
                           end},
         {old_v5_name, <<0, 7, $n, 0, 5, 0, 0, 0, 0>>},
         {zeros, binary:copy(<<0>>, 4096)},
         {immediate_close, <<>>}],
    [begin
         S = raw_socket(Node),
         ok = gen_tcp:send(S, Bytes),
         Closed = case Kind of
                      immediate_close -> gen_tcp:close(S), true;
                      _ -> ash_raw_dist:closed_within(S, 3000)
                  end,
         gen_tcp:close(S),
         ?assertEqual({Kind, closed}, {Kind, case Closed of true -> closed; false -> open end})
     end || {Kind, Bytes} <- Variants],
    ?assertNotEqual([], ash_node:log_contains(?config(rust, Config),
                                              [<<"refused an incoming connection">>])),
    assert_healthy(Config).

%% A client that connects and says nothing holds one socket, not the node.
raw_silent_client_does_no_harm(Config) ->
    Node = ?config(node, Config),
    Silent = [raw_socket(Node) || _ <- lists:seq(1, 20)],
    assert_healthy(Config),
    Me = my_name("raw_during_silent"),
    {ok, S, _} = ash_raw_dist:connect(Node, Me, cookie()),
    ?assertEqual({ok, pong},
                 ash_raw_dist:call(S, ash_raw_dist:fake_pid(Me, 1), ash_gen_server, ping)),
    gen_tcp:close(S),
    [gen_tcp:close(X) || X <- Silent],
    assert_healthy(Config).

raw_garbage_after_handshake_bad_tag(Config) ->
    Node = ?config(node, Config),
    [begin
         {ok, S, _} = ash_raw_dist:connect(Node, my_name("raw_badtag"), cookie()),
         ok = gen_tcp:send(S, Frame),
         ?assertEqual({Frame, closed},
                      {Frame, case ash_raw_dist:closed_within(S, 3000) of
                                  true -> closed;
                                  false -> open
                              end}),
         gen_tcp:close(S)
     end || Frame <- [<<99, 1, 2, 3>>, <<131, 104, 0>>, <<0>>, <<255, 255, 255>>]],
    assert_healthy(Config).

%% Good calls and a broken frame in one write: the node answers every good call, then closes
%% the connection (the replies held back to be written together go out before the close).
raw_replies_before_a_broken_frame(Config) ->
    Node = ?config(node, Config),
    R = ash_node:uniq_res(before_broken),
    ok = ash_node:req(Config, {define, R, #{primary_key => [id]}}),
    {ok, _} = ash_node:req(Config, {create, R, #{id => 1}}),
    Me = my_name("raw_then_bad"),
    {ok, S, _} = ash_raw_dist:connect(Node, Me, cookie()),
    From = ash_raw_dist:fake_pid(Me, 1),
    Calls = [begin
                 Ref = make_ref(),
                 Frame = iolist_to_binary(
                           [112, term_to_binary({6, From, '', ash_gen_server}),
                            term_to_binary({'$gen_call', {From, Ref}, {get, R, #{id => 1}}})]),
                 {Ref, <<(byte_size(Frame)):32, Frame/binary>>}
             end || _ <- lists:seq(1, 20)],
    ok = inet:setopts(S, [{packet, raw}]),
    ok = gen_tcp:send(S, [[F || {_, F} <- Calls], <<4:32, 99, 1, 2, 3>>]),
    ok = inet:setopts(S, [{packet, 4}]),
    Replies = ash_raw_dist:replies_until_closed(S, 5000),
    gen_tcp:close(S),
    ?assertEqual([{Ref, {ok, #{id => 1}}} || {Ref, _} <- Calls], Replies),
    assert_healthy(Config).

%% Frames with the pass-through tag whose terms are garbage: the node must survive (it may drop
%% the frame and keep the connection, or close it); if the connection stays, it still works.
raw_garbage_after_handshake_bad_terms(Config) ->
    Node = ?config(node, Config),
    Me = my_name("raw_badterms"),
    Deep = iolist_to_binary([131, lists:duplicate(100000, [108, 0, 0, 0, 1]), 106,
                             lists:duplicate(100000, 106)]),
    From = ash_raw_dist:fake_pid(Me, 1),
    Frames =
        [{bad_version, <<112, 130, 97, 1>>},
         {truncated, <<112, 131, 104, 3, 97, 1>>},
         {huge_list, <<112, 131, 108, 255, 255, 255, 255, 106>>},
         {huge_binary, <<112, 131, 109, 255, 255, 255, 255, 1, 2, 3>>},
         {huge_map, <<112, 131, 116, 255, 255, 255, 255>>},
         {huge_tuple, <<112, 131, 105, 255, 255, 255, 255>>},
         {huge_atom, <<112, 131, 118, 255, 255, 1, 2>>},
         {huge_bignum, <<112, 131, 111, 255, 255, 255, 255, 0, 1>>},
         {deep_nesting, <<112, Deep/binary>>},
         {atom_cache_ref, <<112, 131, 82, 0>>},
         {compressed, <<112, 131, 80, 0, 0, 0, 10, 1, 2, 3>>},
         {not_a_tuple, <<112, (term_to_binary(hello))/binary>>},
         {unknown_control, <<112, (term_to_binary({999, x}))/binary>>},
         {control_wrong_types, <<112, (term_to_binary({6, not_a_pid, '', 42}))/binary,
                                 (term_to_binary(x))/binary>>},
         {send_missing_payload, <<112, (term_to_binary({6, From, '', ash_gen_server}))/binary>>},
         {trailing_garbage, <<112, (term_to_binary({6, From, '', ash_gen_server}))/binary,
                              (term_to_binary(x))/binary, 1, 2, 3>>},
         {random, <<112, (crypto:strong_rand_bytes(2000))/binary>>}],
    Outcomes =
        [begin
             {ok, S, _} = ash_raw_dist:connect(Node, Me ++ integer_to_list(I), cookie()),
             ok = gen_tcp:send(S, Bytes),
             Fp = ash_raw_dist:fake_pid(Me ++ integer_to_list(I), 7),
             Outcome = case ash_raw_dist:call(S, Fp, ash_gen_server, ping) of
                           {ok, pong} -> still_works;
                           {error, closed} -> closed;
                           Other -> {broken, Other}
                       end,
             gen_tcp:close(S),
             ?assert(ash_node:alive(?config(rust, Config))),
             ?assertEqual(pong, ?REQ(ping)),
             {Kind, Outcome}
         end || {I, {Kind, Bytes}} <- lists:zip(lists:seq(1, length(Frames)), Frames)],
    ct:log("outcomes: ~p", [Outcomes]),
    ?assertEqual([], [KO || {_, O} = KO <- Outcomes, O =/= still_works, O =/= closed]),
    assert_healthy(Config).

raw_oversized_frame(Config) ->
    Node = ?config(node, Config),
    {ok, S, _} = ash_raw_dist:connect(Node, my_name("raw_huge"), cookie()),
    ok = inet:setopts(S, [{packet, raw}]),
    ok = gen_tcp:send(S, <<255, 255, 255, 255, 112, 131>>),
    ?assert(ash_raw_dist:closed_within(S, 3000)),
    gen_tcp:close(S),
    assert_healthy(Config).

%% A call whose From is a pid on a node that is not connected: no one to answer, no harm done.
reply_to_unreachable_caller(Config) ->
    Node = ?config(node, Config),
    Ghost = ash_raw_dist:fake_pid("ghost_" ++ os:getpid() ++ "@127.0.0.1", 3),
    [{ash_gen_server, Node} ! {'$gen_call', {Ghost, make_ref()}, Req}
     || Req <- [ping, {get, ?config(res, Config), #{id => 1}}, resources]],
    {ok, Pid} = ?REQ({whereis, ?config(res, Config), #{id => 1}}),
    Pid ! {'$gen_call', {Ghost, make_ref()}, get},
    assert_healthy(Config).

%% Nesting is limited by the node (to protect its stack): a call nested deeper than
%% --max-term-depth (default 300) is answered with the bad_request PROTOCOL.md documents ("Limits")
%% and creates nothing; the node and the connection live on. Below it, values round-trip.
deep_request(Config) ->
    R = ?config(res, Config),
    Deep = fun Nest(0) -> leaf; Nest(N) -> [Nest(N - 1)] end,
    V = Deep(200),
    ?assertEqual({ok, #{id => 100, v => V}}, ?REQ({create, R, #{id => 100, v => V}})),
    ?assertEqual({ok, #{id => 100, v => V}}, ?REQ({get, R, #{id => 100}})),
    ok = ?REQ({destroy, R, #{id => 100}}),
    ?assertEqual({error, {bad_request, <<"the request nests deeper than 300 levels">>}},
                 ?REQ({create, R, #{id => 101, v => Deep(100000)}})),
    ?assertEqual({error, not_found}, ?REQ({get, R, #{id => 101}})),
    assert_healthy(Config).

%% A node started with small --max-* values enforces them, with the replies PROTOCOL.md
%% ("Limits") documents, and creates nothing for a refused request; just under each limit the
%% same request goes through. The suite's own node (defaults) is not affected.
small_limits_take_effect(Config) ->
    N = ash_node:start(Config, #{tag => "limits",
                                 args => ["--max-records-per-request", "10",
                                          "--max-term-depth", "20",
                                          "--max-list-length", "50",
                                          "--max-bignum-bytes", "16"]}),
    Node = ash_node:node(N),
    Call = fun(Req) -> ash_node:call(Node, Req) end,
    try
        R = ash_node:define(Node, ash_node:uniq_res(limits), #{primary_key => [id]}),
        Recs = fun(From, To) -> [#{id => I} || I <- lists:seq(From, To)] end,
        %% records per request: bulk_create of 11 refused, nothing created; 10 go in
        ?assertEqual({error, {bad_request, <<"bulk_create of 11 records exceeds the limit of 10 "
                                             "records per request">>}},
                     Call({bulk_create, R, Recs(1, 11), #{}})),
        ?assertEqual({ok, []}, Call({query, R, #{}})),
        ?assertMatch({ok, _}, Call({bulk_create, R, Recs(1, 10), #{}})),
        ?assertMatch({ok, #{count := 10}}, Call({info, R})),
        %% term depth
        Deep = fun Nest(0) -> leaf; Nest(D) -> [Nest(D - 1)] end,
        ?assertEqual({error, {bad_request, <<"the request nests deeper than 20 levels">>}},
                     Call({create, R, #{id => deep, v => Deep(30)}})),
        ?assertMatch({ok, _}, Call({create, R, #{id => shallow, v => Deep(10)}})),
        %% list length
        ?assertEqual({error, {bad_request, <<"the request holds a list, tuple or map of more "
                                             "than 50 elements">>}},
                     Call({create, R, #{id => long, v => lists:seq(1, 51)}})),
        ?assertMatch({ok, _}, Call({create, R, #{id => short, v => lists:seq(1, 50)}})),
        %% bignum size: 2^200 takes 26 bytes, 2^100 13
        ?assertEqual({error, {bad_request, <<"the request holds an integer of more than 16 "
                                             "bytes">>}},
                     Call({create, R, #{id => big, v => 1 bsl 200}})),
        ?assertMatch({ok, _}, Call({create, R, #{id => small, v => 1 bsl 100}})),
        %% nothing refused was created
        {ok, Left} = Call({query, R, #{}}),
        ?assertEqual(lists:sort(lists:seq(1, 10) ++ [shallow, short, small]),
                     lists:sort([I || #{id := I} <- Left])),
        ?assertEqual(pong, Call(ping))
    after
        ?assertEqual(0, ash_node:stop(N))
    end,
    %% the suite's node keeps its defaults
    Long = lists:seq(1, 51),
    ?assertMatch({ok, _}, ?REQ({create, ?config(res, Config), #{id => 300, v => Long}})),
    ?assertEqual({ok, #{id => 300, v => Long}}, ?REQ({get, ?config(res, Config), #{id => 300}})),
    ok = ?REQ({destroy, ?config(res, Config), #{id => 300}}),
    assert_healthy(Config).

big_values(Config) ->
    R = ?config(res, Config),
    Big = crypto:strong_rand_bytes(8 * 1024 * 1024),
    ?assertEqual({ok, #{id => 200, v => Big}}, ash_node:req(Config, {create, R, #{id => 200, v => Big}}, 10000)),
    ?assertEqual({ok, #{id => 200, v => Big}}, ash_node:req(Config, {get, R, #{id => 200}}, 10000)),
    ok = ?REQ({destroy, R, #{id => 200}}),
    assert_healthy(Config).

concurrent_clients(Config) ->
    R = ?config(res, Config),
    Node = ?config(node, Config),
    Parent = self(),
    Workers = 50,
    Ops = 20,
    Pids = [spawn_link(fun() ->
                               Id = 1000 + W,
                               {ok, _} = ash_node:call(Node, {create, R, #{id => Id, n => 0}}),
                               [{ok, #{n := K}} = ash_node:call(Node, {update, R, #{id => Id},
                                                                       #{n => K}})
                                || K <- lists:seq(1, Ops)],
                               {ok, #{n := Ops}} = ash_node:call(Node, {get, R, #{id => Id}}),
                               Parent ! {done, self()}
                       end) || W <- lists:seq(1, Workers)],
    [receive {done, P} -> ok after 20000 -> ct:fail(worker_timeout) end || P <- Pids],
    ?assertMatch({ok, #{count := 55}}, ?REQ({info, R})),
    ?assertEqual({ok, #{n => Workers * Ops}},
                 ?REQ({aggregate, R, #{filter => {gte, id, 1000}}, [{n, sum, n, #{}}]})),
    ?assertEqual({ok, 55}, ?REQ({clear, R})),
    ?assertEqual({ok, []}, ?REQ({query, R, #{}})).

%% ---------------------------------------------------------------------------------------------
%% real erl nodes with other cookies

wrong_cookie_erl_peer(Config) ->
    Node = ?config(node, Config),
    {Bad, BadName} = ash_node:start_peer("badcookie", #{cookie => "some_other_cookie"}),
    {Good, _} = ash_node:start_peer("goodcookie", #{}),
    try
        ?assertEqual(pang, ash_node:peer_call(Bad, net_adm, ping, [Node])),
        ?assertEqual(pong, ash_node:peer_call(Good, net_adm, ping, [Node])),
        ?assertEqual({ok, [Node]}, {ok, ash_node:peer_call(Good, erlang, nodes, [hidden])}),
        ?assertEqual(pong, ash_node:peer_call(Good, gen_server, call,
                                              [{ash_gen_server, Node}, ping, 2000])),
        ?assertNotEqual([], ash_node:wait_log(?config(rust, Config), [<<"cookie">>], 2000)),
        ct:log("bad peer ~p refused; log: ~p",
               [BadName, ash_node:log_contains(?config(rust, Config), [<<"cookie">>])])
    after
        ash_node:stop_peer(Bad),
        ash_node:stop_peer(Good)
    end,
    assert_healthy(Config).

join_with_wrong_and_right_cookie(Config) ->
    {Bad, BadName} = ash_node:start_peer("join_bad", #{cookie => "yet_another_cookie"}),
    {Good, GoodName} = ash_node:start_peer("join_good", #{}),
    N2 = try
             ash_node:start(Config, #{tag => "joiner",
                                      args => ["--join", atom_to_list(BadName),
                                               "--join", atom_to_list(GoodName)]})
         catch C:E:St ->
                 ash_node:stop_peer(Bad), ash_node:stop_peer(Good),
                 erlang:raise(C, E, St)
         end,
    Joiner = ash_node:node(N2),
    try
        ash_node:await(good_peer_sees_joiner,
                       fun() -> lists:member(Joiner, ash_node:peer_call(Good, erlang, nodes,
                                                                        [hidden]))
                       end, 5000),
        ?assertNot(lists:member(Joiner, ash_node:peer_call(Bad, erlang, nodes, [connected]))),
        %% the dial to the bad peer happened and was refused at the challenge, and said so
        Refused = ash_node:wait_log(N2, [<<"could not join">>, atom_to_binary(BadName),
                                         <<"refused the handshake">>, <<"cookies">>], 10000),
        ct:log("refused: ~p", [Refused]),
        ?assertMatch([_], Refused),
        ?assertEqual([], ash_node:log_contains(N2, [<<"could not join">>,
                                                   atom_to_binary(GoodName)])),
        ?assert(ash_node:alive(N2)),
        ?assertEqual(pong, ash_node:call(Joiner, ping)),
        ?assertEqual(pong, ash_node:peer_call(Good, gen_server, call,
                                              [{ash_gen_server, Joiner}, ping, 2000])),
        ct:log("joiner log:~n~s", [iolist_to_binary(lists:join("\n",
                                                               ash_node:log_lines(N2)))])
    after
        ?assertEqual(0, ash_node:stop(N2)),
        ash_node:stop_peer(Bad),
        ash_node:stop_peer(Good)
    end.

%% ---------------------------------------------------------------------------------------------
%% signals

stops_on_sigterm(Config) -> stops_on(Config, "TERM").

stops_on_sigint(Config) -> stops_on(Config, "INT").

stops_on(Config, Signal) ->
    N2 = ash_node:start(Config, #{tag => "sig" ++ string:lowercase(Signal)}),
    Node = ash_node:node(N2),
    [Name, _] = string:split(atom_to_list(Node), "@"),
    ?assertMatch({port, _, _}, erl_epmd:port_please(Name, "127.0.0.1")),
    true = erlang:monitor_node(Node, true),
    T0 = erlang:monotonic_time(millisecond),
    Status = ash_node:stop(N2, Signal),
    ct:log("exit status after SIG~s: ~p in ~b ms", [Signal, Status, ash_node:elapsed_ms(T0)]),
    ?assertEqual(0, Status),
    receive {nodedown, Node} -> ok after 2000 -> ct:fail(no_nodedown) end,
    ?assertEqual(noport, erl_epmd:port_please(Name, "127.0.0.1")),
    ?assertEqual(pang, net_adm:ping(Node)),
    assert_healthy(Config).
