%% Helpers shared by the Common Test suites: start/stop the real Rust node binary as an Erlang
%% port, call its protocol server, poll with deadlines, start peer erl nodes, read node logs.
-module(ash_node).

-export([bin/0, start/2, stop/1, stop/2, start_suite/2, stop_suite/1, node/1, os_pid/1,
         log_file/1, log_lines/1,
         wait_log/3, log_contains/2,
         call/2, call/3, cast/2, req/2, req/3,
         uniq/1, uniq_int/0, uniq_res/1, await/3, await/2, poll/3, recv/2, no_msg/2, down/2, no_down/2,
         define/3, start_peer/2, stop_peer/1, peer_call/4, os_kill/2,
         flush/0, elapsed_ms/1, alive/1, tls_certs/1, run_bin/2]).

-define(READY_TIMEOUT, 15000).
-define(PING_TIMEOUT, 10000).
%% A node exits within its --shutdown-timeout (10 s by default) of SIGTERM, even when the
%% cluster it leaves has lost members; a little more before it counts as hung and is killed.
-define(STOP_TIMEOUT, 13000).
-define(CALL_TIMEOUT, 3000).

%% ---------------------------------------------------------------------------------------------
%% The binary

bin() ->
    case os:getenv("ASH_GEN_SERVER_BIN") of
        false ->
            %% <repo>/integration/erl/ash_node.beam -> <repo>/target/release/ash-gen-server
            Here = filename:dirname(code:which(?MODULE)),
            filename:absname(filename:join([Here, "..", "..", "target", "release",
                                            "ash-gen-server"]));
        "" -> bin_default();
        Path -> Path
    end.

bin_default() ->
    os:unsetenv("ASH_GEN_SERVER_BIN"),
    bin().

%% ---------------------------------------------------------------------------------------------
%% Starting and stopping a node

%% start(Config, Opts) -> Node map.
%% Opts:
%%   tag => string()           part of the node name (default "rust")
%%   name => string()          the whole name before @127.0.0.1 (to restart a node as itself)
%%   cookie => string()        default: this node's cookie
%%   args => [string()]        extra arguments for `start` (e.g. ["--enable-fault-injection"])
%%   tls => OptFile            TLS distribution with this option file (see tls_certs/1)
%%   ping => boolean()         wait for net_adm:ping/1 to pong (default true; false with tls:
%%                             this VM runs plain TCP and cannot reach a TLS node)
%%   exit_expected => boolean() the test makes the node exit with a status other than 0 on
%%                             purpose (default false: such an exit fails the run)
start(Config, Opts) ->
    Bin = bin(),
    case filelib:is_regular(Bin) of
        true -> ok;
        false -> ct:fail({node_binary_missing, Bin})
    end,
    Tag = maps:get(tag, Opts, "rust"),
    Name = case Opts of
               #{name := Given} -> Given;
               _ -> lists:flatten(io_lib:format("~s_~s_~b", [Tag, os:getpid(), uniq_int()]))
           end,
    NodeName = Name ++ "@127.0.0.1",
    Cookie = maps:get(cookie, Opts, atom_to_list(erlang:get_cookie())),
    Args = ["start", "--name", NodeName, "--cookie", Cookie] ++ tls_args(Opts)
        ++ maps:get(args, Opts, []),
    LogDir = case proplists:get_value(priv_dir, Config) of
                 undefined -> "/tmp";
                 D -> D
             end,
    LogFile = filename:join(LogDir, Name ++ ".log"),
    keep_earlier_log(LogFile, 1),
    Parent = self(),
    Expected = maps:get(exit_expected, Opts, false),
    Owner = spawn(fun() -> owner_init(Parent, Bin, Args, LogFile, Expected) end),
    Ref = erlang:monitor(process, Owner),
    receive
        {Owner, ready, OsPid, Line} ->
            erlang:demonitor(Ref, [flush]),
            ct:log("started ~s (os pid ~p): ~s~nargs: ~p~nlog: ~s",
                   [NodeName, OsPid, Line, Args, LogFile]),
            N = #{node => list_to_atom(NodeName), name => Name, owner => Owner,
                  os_pid => OsPid, log => LogFile, cookie => Cookie, args => Args},
            case maps:get(ping, Opts, not maps:is_key(tls, Opts)) of
                true -> wait_ping(N);
                false -> ok
            end,
            N;
        {Owner, failed, Why} ->
            erlang:demonitor(Ref, [flush]),
            ct:fail({node_start_failed, NodeName, Why, read_file(LogFile)});
        {'DOWN', Ref, process, Owner, Why} ->
            ct:fail({node_owner_died, NodeName, Why, read_file(LogFile)})
    after ?READY_TIMEOUT ->
            Owner ! {stop, self()},
            ct:fail({node_not_ready, NodeName, read_file(LogFile)})
    end.

%% A node restarted under the same name (a durable member coming back) gets a fresh log; the
%% earlier run's log moves to `Name.log.1` (`.2`, ...), so the evidence of how it ended stays.
keep_earlier_log(LogFile, I) ->
    case filelib:is_regular(LogFile) of
        false -> ok;
        true ->
            Kept = LogFile ++ "." ++ integer_to_list(I),
            case filelib:is_regular(Kept) of
                true -> keep_earlier_log(LogFile, I + 1);
                false -> ok = file:rename(LogFile, Kept)
            end
    end.

tls_args(#{tls := OptFile}) -> ["--proto-dist", "inet_tls", "--ssl-dist-optfile", OptFile];
tls_args(_) -> [].

wait_ping(#{node := Node} = N) ->
    Ok = poll(fun() -> net_adm:ping(Node) =:= pong end, ?PING_TIMEOUT, 50),
    case Ok of
        true -> ok;
        false -> ct:fail({node_does_not_pong, Node, read_file(maps:get(log, N))})
    end.

%% Stops the node with SIGTERM (or Signal); returns its exit status (or already_exited).
stop(N) -> stop(N, "TERM").

stop(#{owner := Owner}, Signal) ->
    Ref = erlang:monitor(process, Owner),
    Owner ! {stop, self(), Signal},
    receive
        {Owner, stopped, Status} ->
            erlang:demonitor(Ref, [flush]),
            Status;
        {'DOWN', Ref, process, Owner, _} ->
            already_exited
    after ?STOP_TIMEOUT + 2000 ->
            erlang:demonitor(Ref, [flush]),
            timeout
    end.

node(#{node := Node}) -> Node.

%% For init_per_suite: starts a node (Opts as for start/2) and keeps it in Config as `rust`
%% (for stop_suite/1, log_lines/1, ...) and its name as `node` (for req/2).
start_suite(Config, Opts) ->
    #{node := Node} = N = start(Config, Opts),
    [{rust, N}, {node, Node} | Config].

%% For end_per_suite: stops the node of start_suite/2; its exit status must be 0.
stop_suite(Config) ->
    case stop(proplists:get_value(rust, Config)) of
        0 -> ok;
        Status -> ct:fail({node_exit_status, Status})
    end.

%% Whether the node's OS process is still running.
alive(#{os_pid := OsPid}) ->
    string:trim(os:cmd(io_lib:format("kill -0 ~b 2>&1 && echo yes", [OsPid]))) =:= "yes".
os_pid(#{os_pid := P}) -> P.
log_file(#{log := F}) -> F.

owner_init(Parent, Bin, Args, LogFile, ExitExpected) ->
    {ok, Log} = file:open(LogFile, [write, raw, binary]),
    Env = [{"NO_COLOR", "1"},
           {"RUST_LOG", case os:getenv("RUST_LOG") of
                            false -> "info";
                            "" -> "info";
                            L -> L
                        end}],
    Port = open_port({spawn_executable, Bin},
                     [{args, Args}, {env, Env}, {line, 65536}, binary, exit_status,
                      stderr_to_stdout, use_stdio]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    PidFile = pid_file(OsPid),
    owner_loop(#{parent => Parent, port => Port, log => Log, os_pid => OsPid,
                 pid_file => PidFile, ready => false, partial => <<>>,
                 log_file => LogFile, exit_expected => ExitExpected}).

%% A node that was ready and then exited with a status other than 0 (a panic, a crash, a hang
%% killed after the stop timeout): the run script finds the mark and fails the run, whichever
%% test stopped the node (or none did).
mark_bad_exit(#{log_file := LogFile}, Status) ->
    case os:getenv("ASH_ERL_EXITDIR") of
        false -> ok;
        "" -> ok;
        Dir ->
            F = filename:join(Dir, filename:basename(LogFile)),
            file:write_file(F, io_lib:format("~s: exit status ~p~n", [LogFile, Status])),
            %% The log itself, as it is now: the run script prints its tail, so the cause is
            %% in the CI output even when the log file is later overwritten or not kept.
            _ = file:copy(LogFile, F ++ ".tail"),
            ok
    end,
    ct:log("node ~s exited with status ~p", [LogFile, Status]).

%% The run script passes ASH_ERL_PIDDIR: every node we start leaves its OS pid there, so the
%% script can kill exactly our nodes should the Erlang VM die without stopping them.
pid_file(OsPid) ->
    case os:getenv("ASH_ERL_PIDDIR") of
        false -> undefined;
        "" -> undefined;
        Dir ->
            F = filename:join(Dir, integer_to_list(OsPid)),
            ok = file:write_file(F, integer_to_list(OsPid)),
            F
    end.

owner_loop(#{port := Port, log := Log, parent := Parent} = S) ->
    receive
        {Port, {data, {noeol, Bytes}}} ->
            ok = file:write(Log, Bytes),
            owner_loop(S#{partial := <<(maps:get(partial, S))/binary, Bytes/binary>>});
        {Port, {data, {eol, Bytes}}} ->
            ok = file:write(Log, [Bytes, $\n]),
            Line = strip_ansi(<<(maps:get(partial, S))/binary, Bytes/binary>>),
            S1 = S#{partial := <<>>},
            case {maps:get(ready, S1), Line} of
                {false, <<"ready ", _/binary>>} ->
                    Parent ! {self(), ready, maps:get(os_pid, S1), Line},
                    owner_loop(S1#{ready := true});
                _ ->
                    owner_loop(S1)
            end;
        {Port, {exit_status, Status}} ->
            ok = file:write(Log, io_lib:format("~n[ash_node] exited with status ~p~n", [Status])),
            case maps:get(ready, S) of
                false -> Parent ! {self(), failed, {exit_status, Status}};
                true when Status =/= 0 ->
                    case maps:get(exit_expected, S) of
                        true -> ct:log("node ~s exited with status ~p, as the test expects",
                                       [maps:get(log_file, S), Status]);
                        false -> mark_bad_exit(S, Status)
                    end;
                true -> ok
            end,
            remove_pid_file(S),
            exited_loop(S, Status);
        {stop, From} ->
            do_stop(S, From, "TERM");
        {stop, From, Signal} ->
            do_stop(S, From, Signal)
    end.

exited_loop(S, Status) ->
    receive
        {stop, From} -> From ! {self(), stopped, {already_exited, Status}};
        {stop, From, _} -> From ! {self(), stopped, {already_exited, Status}};
        _ -> exited_loop(S, Status)
    after 600000 -> ok
    end.

do_stop(#{os_pid := OsPid, port := Port, log := Log} = S, From, Signal) ->
    _ = os:cmd(io_lib:format("kill -~s ~b", [Signal, OsPid])),
    Status = wait_exit(Port, Log, erlang:monotonic_time(millisecond) + ?STOP_TIMEOUT),
    Final = case Status of
                timeout ->
                    _ = os:cmd(io_lib:format("kill -KILL ~b", [OsPid])),
                    {killed_after_timeout, wait_exit(Port, Log,
                                                     erlang:monotonic_time(millisecond) + 2000)};
                _ -> Status
            end,
    file:close(Log),
    remove_pid_file(S),
    catch port_close(Port),
    %% A node killed on purpose (SIGKILL) exits 137: expected, not a bad exit.
    Final =:= 0 orelse (Signal =:= "KILL" andalso Final =:= 137) orelse mark_bad_exit(S, Final),
    From ! {self(), stopped, Final}.

wait_exit(Port, Log, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, {_, Bytes}}} ->
            file:write(Log, [Bytes, $\n]),
            wait_exit(Port, Log, Deadline);
        {Port, {exit_status, Status}} ->
            file:write(Log, io_lib:format("~n[ash_node] exited with status ~p~n", [Status])),
            Status
    after Left -> timeout
    end.

remove_pid_file(#{pid_file := undefined}) -> ok;
remove_pid_file(#{pid_file := F}) -> file:delete(F).

strip_ansi(Bin) ->
    iolist_to_binary(re:replace(Bin, <<"\e\\[[0-9;]*m">>, <<>>, [global])).

read_file(F) ->
    case file:read_file(F) of
        {ok, B} -> strip_ansi(B);
        _ -> <<>>
    end.

%% ---------------------------------------------------------------------------------------------
%% Logs

log_lines(N) ->
    binary:split(read_file(log_file(N)), <<"\n">>, [global, trim_all]).

log_contains(N, Patterns) when is_list(Patterns) ->
    [L || L <- log_lines(N),
          lists:all(fun(P) -> binary:match(L, iolist_to_binary(P)) =/= nomatch end, Patterns)].

%% Waits until a log line contains every pattern; returns the matching lines or [].
wait_log(N, Patterns, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    wait_log_until(N, Patterns, Deadline).

wait_log_until(N, Patterns, Deadline) ->
    case log_contains(N, Patterns) of
        [] ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> [];
                false -> timer:sleep(25), wait_log_until(N, Patterns, Deadline)
            end;
        Lines -> Lines
    end.

%% ---------------------------------------------------------------------------------------------
%% Calling the protocol server

call(Node, Req) -> call(Node, Req, ?CALL_TIMEOUT).

call(Node, Req, Timeout) when is_atom(Node) ->
    gen_server:call({ash_gen_server, Node}, Req, Timeout);
call(#{node := Node}, Req, Timeout) ->
    call(Node, Req, Timeout).

cast(Node, Req) when is_atom(Node) -> gen_server:cast({ash_gen_server, Node}, Req);
cast(#{node := Node}, Req) -> cast(Node, Req).

%% call/2 on the node kept in a Common Test config.
req(Config, Req) -> call(proplists:get_value(node, Config), Req).
req(Config, Req, Timeout) -> call(proplists:get_value(node, Config), Req, Timeout).

define(Node, Res, Opts) ->
    ok = call(Node, {define, Res, Opts}),
    Res.

%% ---------------------------------------------------------------------------------------------
%% Unique names, polling, receiving

uniq_int() -> erlang:unique_integer([positive]).

uniq(Prefix) when is_atom(Prefix) -> uniq(atom_to_list(Prefix));
uniq(Prefix) -> lists:flatten(io_lib:format("~s_~b", [Prefix, uniq_int()])).

%% A fresh resource name: an atom unique to this run.
uniq_res(Prefix) -> list_to_atom(uniq(Prefix)).

%% poll(Fun, Timeout, Interval) -> true once Fun() is true, false at the deadline.
poll(Fun, Timeout, Interval) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    poll_until(Fun, Deadline, Interval).

poll_until(Fun, Deadline, Interval) ->
    case Fun() of
        true -> true;
        _ ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> false;
                false -> timer:sleep(Interval), poll_until(Fun, Deadline, Interval)
            end
    end.

%% await(What, Fun, Timeout): like poll, but fails the test case with What on timeout.
await(What, Fun, Timeout) ->
    case poll(Fun, Timeout, 10) of
        true -> ok;
        false -> ct:fail({timeout_waiting_for, What, Timeout})
    end.

await(Fun, Timeout) -> await(condition, Fun, Timeout).

%% recv(Match, Timeout): receives the first message for which Match returns {true, Value} and
%% returns Value (or timeout). Messages that do not match are put back (at the end of the queue).
%% down(Mon, Timeout) -> the reason of monitor Mon's 'DOWN', or no_down at the deadline.
down(Mon, Timeout) ->
    receive {'DOWN', Mon, process, _, Reason} -> Reason
    after Timeout -> no_down
    end.

%% no_down(Mon, Timeout) -> ok if monitor Mon sends no 'DOWN' before the deadline.
no_down(Mon, Timeout) ->
    receive {'DOWN', Mon, process, _, Reason} -> ct:fail({unexpected_down, Reason})
    after Timeout -> ok
    end.

recv(Match, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    recv_until(Match, Deadline, []).

recv_until(Match, Deadline, Seen) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        Msg ->
            case Match(Msg) of
                {true, V} -> requeue(lists:reverse(Seen)), V;
                false -> recv_until(Match, Deadline, [Msg | Seen])
            end
    after Left ->
            requeue(lists:reverse(Seen)),
            timeout
    end.

requeue(Msgs) -> [self() ! M || M <- Msgs], ok.

%% Asserts that no message matching Match arrives within Timeout ms.
no_msg(Match, Timeout) ->
    case recv(Match, Timeout) of
        timeout -> ok;
        V -> ct:fail({unexpected_message, V})
    end.

flush() ->
    receive _ -> flush() after 0 -> ok end.

elapsed_ms(T0) -> erlang:monotonic_time(millisecond) - T0.

%% ---------------------------------------------------------------------------------------------
%% Peer erl nodes (kept off the test node's own distribution: they talk over stdio)

%% start_peer(Tag, Opts): Opts cookie => string(), args => [string()], tls => OptFile (the peer
%% runs TLS distribution, -proto_dist inet_tls; the control connection is stdio either way).
start_peer(Tag, Opts) ->
    Name = case Opts of
               #{name := Given} -> Given;
               _ -> lists:flatten(io_lib:format("~s_~s_~b", [Tag, os:getpid(), uniq_int()]))
           end,
    Cookie = maps:get(cookie, Opts, atom_to_list(erlang:get_cookie())),
    {ok, Peer, Node} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true,
                                    connection => standard_io,
                                    args => ["-setcookie", Cookie,
                                             %% our modules (and funs of our suites) there too
                                             "-pa", filename:dirname(code:which(?MODULE))]
                                        ++ peer_tls_args(Opts)
                                        ++ maps:get(args, Opts, [])}),
    {Peer, Node}.

peer_tls_args(#{tls := OptFile}) -> ["-proto_dist", "inet_tls", "-ssl_dist_optfile", OptFile];
peer_tls_args(_) -> [].

stop_peer(Peer) ->
    catch peer:stop(Peer),
    ok.

peer_call(Peer, M, F, A) -> peer:call(Peer, M, F, A, 15000).

os_kill(Signal, OsPid) ->
    os:cmd(io_lib:format("kill -~s ~s", [Signal, to_list(OsPid)])).

to_list(I) when is_integer(I) -> integer_to_list(I);
to_list(L) -> L.

%% ---------------------------------------------------------------------------------------------
%% TLS distribution

%% Makes throwaway certificates and an option file in Dir with integration/tls_certs.sh (see
%% there); returns #{Name => Path} for ca, untrusted_ca (.pem), node, rogue (.pem and .key),
%% and optfile (ssl_dist.conf).
tls_certs(Dir) ->
    Script = filename:join([filename:dirname(code:which(?MODULE)), "..", "tls_certs.sh"]),
    case run(Script, [Dir], 30000) of
        {0, _} -> ok;
        {Status, Out} -> ct:fail({tls_certs_failed, Status, Out})
    end,
    F = fun(N) -> filename:join(Dir, N) end,
    #{ca => F("ca.pem"), untrusted_ca => F("untrusted_ca.pem"),
      node => F("node.pem"), node_key => F("node.key"),
      rogue => F("rogue.pem"), rogue_key => F("rogue.key"),
      optfile => F("ssl_dist.conf")}.

%% Runs the node binary with Args to the end: {ExitStatus, Output (stdout and stderr)}.
run_bin(Args, Timeout) -> run(bin(), Args, Timeout).

run(Exe, Args, Timeout) ->
    Port = open_port({spawn_executable, Exe},
                     [{args, Args}, exit_status, stderr_to_stdout, binary, use_stdio,
                      {env, [{"NO_COLOR", "1"}]}]),
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    collect(Port, [], Deadline).

collect(Port, Acc, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, Bytes}} -> collect(Port, [Acc, Bytes], Deadline);
        {Port, {exit_status, Status}} -> {Status, strip_ansi(iolist_to_binary(Acc))}
    after Left ->
            catch port_close(Port),
            {timeout, iolist_to_binary(Acc)}
    end.
