%% A hand-rolled distribution client (handshake version 6, as an OTP 25 node does it) so the
%% suites can talk to the node byte by byte: a correct handshake as a positive control, wrong
%% cookies, garbage before and after the handshake.
-module(ash_raw_dist).

-export([port_of/1, connect_tcp/1, handshake/3, handshake/4, connect/3, flags/0,
         fake_pid/2, send_frame/2, reg_send/4, recv_frame/2, recv_msg/2, call/4, closed_within/2,
         replies_until_closed/2]).

-define(EXTENDED_REFERENCES, 16#04).
-define(DIST_MONITOR, 16#08).
-define(FUN_TAGS, 16#10).
-define(DIST_MONITOR_NAME, 16#20).
-define(NEW_FUN_TAGS, 16#80).
-define(EXTENDED_PIDS_PORTS, 16#100).
-define(EXPORT_PTR_TAG, 16#200).
-define(BIT_BINARIES, 16#400).
-define(NEW_FLOATS, 16#800).
-define(UTF8_ATOMS, 16#10000).
-define(MAP_TAG, 16#20000).
-define(BIG_CREATION, 16#40000).
-define(HANDSHAKE_23, 16#1000000).
-define(UNLINK_ID, 16#2000000).
-define(V4_NC, (16#04 bsl 32)).
-define(ALIAS, (16#08 bsl 32)).

flags() ->
    ?EXTENDED_REFERENCES bor ?DIST_MONITOR bor ?FUN_TAGS bor ?DIST_MONITOR_NAME bor
        ?NEW_FUN_TAGS bor ?EXTENDED_PIDS_PORTS bor ?EXPORT_PTR_TAG bor ?BIT_BINARIES bor
        ?NEW_FLOATS bor ?UTF8_ATOMS bor ?MAP_TAG bor ?BIG_CREATION bor ?HANDSHAKE_23 bor
        ?UNLINK_ID bor ?V4_NC bor ?ALIAS.

%% The node's distribution port, from EPMD.
port_of(Node) ->
    [Name, Host] = string:split(atom_to_list(Node), "@"),
    {port, Port, _Version} = erl_epmd:port_please(Name, Host),
    Port.

connect_tcp(Node) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, port_of(Node),
                              [binary, {packet, 2}, {active, false}, {nodelay, true}], 2000),
    S.

%% connect(Node, MyName, Cookie) -> {ok, Socket, PeerInfo} | {error, Step, Reason}
connect(Node, MyName, Cookie) ->
    handshake(connect_tcp(Node), MyName, Cookie).

handshake(S, MyName, Cookie) -> handshake(S, MyName, Cookie, flags()).

handshake(S, MyName, Cookie, Flags) ->
    Name = iolist_to_binary(MyName),
    Creation = erlang:unique_integer([positive]) band 16#FFFFFFFF,
    ok = gen_tcp:send(S, <<$N, Flags:64, Creation:32, (byte_size(Name)):16, Name/binary>>),
    case gen_tcp:recv(S, 0, 3000) of
        {ok, <<$s, "ok">>} -> challenge(S, Cookie);
        {ok, <<$s, "ok_simultaneous">>} -> challenge(S, Cookie);
        {ok, Other} -> {error, status, Other};
        {error, E} -> {error, status, E}
    end.

challenge(S, Cookie) ->
    case gen_tcp:recv(S, 0, 3000) of
        {ok, <<$N, PFlags:64, Challenge:32, PCreation:32, NLen:16, PName:NLen/binary, _/binary>>} ->
            Mine = rand:uniform(16#FFFFFFFE),
            Digest = erlang:md5([Cookie, integer_to_list(Challenge)]),
            ok = gen_tcp:send(S, <<$r, Mine:32, Digest/binary>>),
            Want = erlang:md5([Cookie, integer_to_list(Mine)]),
            case gen_tcp:recv(S, 0, 3000) of
                {ok, <<$a, Want:16/binary>>} ->
                    ok = inet:setopts(S, [{packet, 4}]),
                    {ok, S, #{flags => PFlags, creation => PCreation, name => PName}};
                {ok, Other} -> {error, ack, Other};
                {error, E} -> {error, ack, E}
            end;
        {ok, Other} -> {error, challenge, Other};
        {error, E} -> {error, challenge, E}
    end.

%% A pid of our fake node (NEW_PID_EXT).
fake_pid(MyName, Id) ->
    Name = iolist_to_binary(MyName),
    binary_to_term(<<131, 88, 119, (byte_size(Name)), Name/binary, Id:32, 0:32, 1:32>>).

send_frame(S, Bytes) -> gen_tcp:send(S, Bytes).

reg_send(S, From, To, Msg) ->
    send_frame(S, [112, term_to_binary({6, From, '', To}), term_to_binary(Msg)]).

%% Next non-tick frame: {ok, Control, Message | none} | {error, Reason}
recv_frame(S, Timeout) ->
    case gen_tcp:recv(S, 0, Timeout) of
        {ok, <<>>} -> recv_frame(S, Timeout);
        {ok, <<112, Rest/binary>>} ->
            {Ctrl, Used} = binary_to_term(Rest, [used]),
            Msg = case byte_size(Rest) - Used of
                      0 -> none;
                      N -> binary_to_term(binary:part(Rest, Used, N))
                  end,
            {ok, Ctrl, Msg};
        {ok, Other} -> {error, {unexpected_frame, Other}};
        {error, E} -> {error, E}
    end.

%% Next message delivered to us (SEND, SEND_SENDER, ALIAS_SEND and their TT variants).
recv_msg(S, Timeout) ->
    case recv_frame(S, Timeout) of
        {ok, Ctrl, Msg} when element(1, Ctrl) =:= 2; element(1, Ctrl) =:= 22;
                             element(1, Ctrl) =:= 33 ->
            {ok, Msg};
        {ok, Ctrl, Msg} -> {other, Ctrl, Msg};
        E -> E
    end.

%% A gen_server:call over the raw connection.
call(S, From, To, Request) ->
    Ref = make_ref(),
    ok = reg_send(S, From, To, {'$gen_call', {From, Ref}, Request}),
    wait_reply(S, Ref, erlang:monotonic_time(millisecond) + 3000).

wait_reply(S, Ref, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    case recv_msg(S, Left) of
        {ok, {Ref, Reply}} -> {ok, Reply};
        {ok, _Other} -> wait_reply(S, Ref, Deadline);
        {other, _, _} -> wait_reply(S, Ref, Deadline);
        E -> E
    end.

%% true when the peer closes the socket within Timeout ms (anything it sends is skipped).
closed_within(S, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    closed_until(S, Deadline).

closed_until(S, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    case gen_tcp:recv(S, 0, Left) of
        {error, closed} -> true;
        {error, econnreset} -> true;
        {error, timeout} -> false;
        {ok, _} ->
            case Left of
                0 -> false;
                _ -> closed_until(S, Deadline)
            end
    end.

%% Every reply ({Ref, Reply}) delivered to us, in order, until the node closes the connection
%% (each wait for the next frame bounded by Timeout).
replies_until_closed(S, Timeout) -> replies_until_closed(S, Timeout, []).

replies_until_closed(S, Timeout, Acc) ->
    case recv_msg(S, Timeout) of
        {ok, {Ref, Reply}} when is_reference(Ref) ->
            replies_until_closed(S, Timeout, [{Ref, Reply} | Acc]);
        {ok, _} -> replies_until_closed(S, Timeout, Acc);
        {other, _, _} -> replies_until_closed(S, Timeout, Acc);
        {error, closed} -> lists:reverse(Acc);
        {error, Other} -> exit({connection_not_closed, Other, length(Acc)})
    end.
