%% Supervision (PROTOCOL.md "Supervision" and "fault injection"), on a node started with
%% --enable-fault-injection, and the refusal of faults on a node started without it.
-module(ash_supervision_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(REQ(R), ash_node:req(Config, R)).

all() ->
    [fault_panic_restarts_with_last_state, fault_error_restarts_with_last_state,
     fault_after_change_restarts_with_last_committed_state,
     fault_after_rekeying_change_restarts_under_the_old_key,
     linked_process_gets_crash_reason, more_than_max_restarts_removes_record,
     restart_window_slides, max_restarts_zero, exit_signals_count_towards_intensity,
     concurrent_callers_never_hang, fault_bad_requests, fault_injection_disabled].

init_per_suite(Config) ->
    ash_node:start_suite(Config, #{tag => "sup", args => ["--enable-fault-injection"]}).

end_per_suite(Config) ->
    ash_node:stop_suite(Config).

init_per_testcase(TC, Config) ->
    [{res, ash_node:uniq_res(TC)} | Config].

end_per_testcase(_, _) -> ok.

%% ---------------------------------------------------------------------------------------------

def(Config, Opts) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, maps:merge(#{primary_key => [id]}, Opts)}),
    R.

mk(Config, R, Id) ->
    {ok, _} = ?REQ({create, R, #{id => Id, n => 0}}),
    {ok, Pid} = ?REQ({whereis, R, #{id => Id}}),
    Pid.

updates(Config, R, Id, N) ->
    [{ok, _} = ?REQ({update, R, #{id => Id}, #{n => K}}) || K <- lists:seq(1, N)],
    #{id => Id, n => N}.

pid_of(Config, R, Id) ->
    case ?REQ({whereis, R, #{id => Id}}) of
        {ok, P} -> P;
        Other -> Other
    end.

%% Injects a fault and checks: the caller gets record_crashed, the old pid's monitors get the
%% failure reason, the record is back under a new pid with its last committed state.
crash_and_restart(Config, R, Id, Kind, Last) ->
    Old = pid_of(Config, R, Id),
    Mon = erlang:monitor(process, Old),
    Reply = ?REQ({fault, R, #{id => Id}, Kind}),
    ?assertMatch({error, {record_crashed, _}}, Reply),
    {error, {record_crashed, Reason}} = Reply,
    Down = ash_node:down(Mon, 2000),
    ct:log("fault ~p: reply reason ~p, DOWN reason ~p", [Kind, Reason, Down]),
    ?assertNotEqual(no_down, Down),
    ?assertNotEqual(normal, Down),
    ?assertNotEqual(noproc, Down),
    ?assertEqual(Reason, Down),
    ?assertEqual({ok, Last}, ?REQ({get, R, #{id => Id}})),
    New = pid_of(Config, R, Id),
    ?assert(is_pid(New)),
    ?assertNotEqual(Old, New),
    ?assertEqual({ok, Last}, gen_server:call(New, get, 2000)),
    New.

fault_panic_restarts_with_last_state(Config) ->
    R = def(Config, #{max_restarts => 3, max_seconds => 5}),
    Other = mk(Config, R, 2),
    _ = mk(Config, R, 1),
    Last = updates(Config, R, 1, 3),
    New = crash_and_restart(Config, R, 1, panic, Last),
    %% the restarted record keeps working and committing
    ?assertEqual({ok, Last#{n => 4}}, ?REQ({update, R, #{id => 1}, #{n => 4}})),
    New2 = crash_and_restart(Config, R, 1, panic, Last#{n => 4}),
    ?assertNotEqual(New, New2),
    %% the neighbour saw nothing
    ?assertEqual(Other, pid_of(Config, R, 2)),
    ?assertEqual({ok, #{id => 2, n => 0}}, ?REQ({get, R, #{id => 2}})),
    ?assertMatch({ok, #{count := 2}}, ?REQ({info, R})).

fault_error_restarts_with_last_state(Config) ->
    R = def(Config, #{max_restarts => 3, max_seconds => 5}),
    _ = mk(Config, R, 1),
    Last = updates(Config, R, 1, 5),
    _ = crash_and_restart(Config, R, 1, error, Last),
    ?assertEqual({ok, [Last]}, ?REQ({query, R, #{}})).

%% The fault strikes inside an update's turn, after the change reached the store (where
%% queries, identities and keys see it) and before the turn committed: committed and current
%% state differ. The record comes back with the last committed state, everywhere.
fault_after_change_restarts_with_last_committed_state(Config) ->
    R = def(Config, #{max_restarts => 3, max_seconds => 5,
                      identities => [{by_email, [email]}]}),
    {ok, _} = ?REQ({create, R, #{id => 1, n => 0, email => <<"a">>}}),
    Last = (updates(Config, R, 1, 2))#{email => <<"a">>},
    Change = #{n => 99, email => <<"b">>},
    _ = crash_and_restart(Config, R, 1, {after_change, Change}, Last),
    %% queries, aggregates and identities see the committed record, not the half-made change
    ?assertEqual({ok, [Last]}, ?REQ({query, R, #{filter => {eq, email, <<"a">>}}})),
    ?assertEqual({ok, []}, ?REQ({query, R, #{filter => {eq, email, <<"b">>}}})),
    ?assertEqual({ok, #{s => 2}}, ?REQ({aggregate, R, #{}, [{s, sum, n, #{}}]})),
    ?assertEqual({error, {identity_conflict, by_email, #{email => <<"a">>}}},
                 ?REQ({create, R, #{id => 2, email => <<"a">>}})),
    ?assertMatch({ok, #{id := 3, email := <<"b">>}}, ?REQ({create, R, #{id => 3, email => <<"b">>}})),
    %% and the record goes on committing
    ?assertEqual({ok, Last#{n => 3}}, ?REQ({update, R, #{id => 1}, #{n => 3}})).

fault_after_rekeying_change_restarts_under_the_old_key(Config) ->
    R = def(Config, #{max_restarts => 3, max_seconds => 5}),
    _ = mk(Config, R, 1),
    Last = updates(Config, R, 1, 1),
    _ = crash_and_restart(Config, R, 1, {after_change, #{id => 10, n => 5}}, Last),
    ?assertEqual({error, not_found}, ?REQ({get, R, #{id => 10}})),
    ?assertEqual({ok, [Last]}, ?REQ({query, R, #{}})),
    ?assertMatch({ok, #{id := 10}}, ?REQ({create, R, #{id => 10}})).

linked_process_gets_crash_reason(Config) ->
    R = def(Config, #{max_restarts => 3, max_seconds => 5}),
    Pid = mk(Config, R, 1),
    Parent = self(),
    L = spawn(fun() ->
                      process_flag(trap_exit, true),
                      link(Pid),
                      _ = gen_server:call(Pid, get, 2000),
                      Parent ! {linked, self()},
                      receive {'EXIT', Pid, Why} -> Parent ! {self(), Why}
                      after 3000 -> Parent ! {self(), no_exit}
                      end
              end),
    receive {linked, L} -> ok after 3000 -> ct:fail(not_linked) end,
    {error, {record_crashed, Reason}} = ?REQ({fault, R, #{id => 1}, panic}),
    receive {L, Why} -> ?assertEqual(Reason, Why) after 4000 -> ct:fail(no_answer) end.

more_than_max_restarts_removes_record(Config) ->
    R = def(Config, #{max_restarts => 2, max_seconds => 10,
                      identities => [{email, [email]}]}),
    Bystander = ash_node:uniq_res(bystander),
    ok = ?REQ({define, Bystander, #{primary_key => [id]}}),
    BPid = mk(Config, Bystander, 1),
    NPid = mk(Config, R, 2),
    {ok, _} = ?REQ({create, R, #{id => 1, n => 0, email => <<"e">>}}),
    Last = (updates(Config, R, 1, 3))#{email => <<"e">>},
    P1 = crash_and_restart(Config, R, 1, panic, Last),
    P2 = crash_and_restart(Config, R, 1, error, Last),
    ?assertNotEqual(P1, P2),
    %% the third failure within the window is one too many
    Mon = erlang:monitor(process, P2),
    ?assertMatch({error, {record_crashed, _}}, ?REQ({fault, R, #{id => 1}, panic})),
    Down = ash_node:down(Mon, 2000),
    ct:log("DOWN after giving up: ~p", [Down]),
    ?assertMatch({shutdown, {max_restarts, _}}, Down),
    ?assertEqual({error, not_found}, ?REQ({get, R, #{id => 1}})),
    ?assertEqual({error, not_found}, ?REQ({whereis, R, #{id => 1}})),
    ?assertEqual({error, not_found}, ?REQ({fault, R, #{id => 1}, panic})),
    ?assertMatch({ok, #{count := 1}}, ?REQ({info, R})),
    ?assertMatch({'EXIT', {noproc, _}}, catch gen_server:call(P2, get, 2000)),
    %% the key and the identity are free again
    ?assertMatch({ok, _}, ?REQ({create, R, #{id => 3, email => <<"e">>}})),
    ?assertMatch({ok, _}, ?REQ({create, R, #{id => 1}})),
    %% the others are untouched
    ?assertEqual(NPid, pid_of(Config, R, 2)),
    ?assertEqual({ok, #{id => 2, n => 0}}, ?REQ({get, R, #{id => 2}})),
    ?assertEqual(BPid, pid_of(Config, Bystander, 1)),
    ?assertEqual({ok, #{id => 1, n => 0}}, ?REQ({get, Bystander, #{id => 1}})).

restart_window_slides(Config) ->
    R = def(Config, #{max_restarts => 1, max_seconds => 1}),
    _ = mk(Config, R, 1),
    Last = updates(Config, R, 1, 1),
    _ = crash_and_restart(Config, R, 1, panic, Last),
    timer:sleep(1100),
    %% the first failure fell out of the window: this one is restarted again
    P = crash_and_restart(Config, R, 1, panic, Last),
    Mon = erlang:monitor(process, P),
    ?assertMatch({error, {record_crashed, _}}, ?REQ({fault, R, #{id => 1}, error})),
    ?assertMatch({shutdown, {max_restarts, _}}, ash_node:down(Mon, 2000)),
    ?assertEqual({error, not_found}, ?REQ({get, R, #{id => 1}})).

max_restarts_zero(Config) ->
    R = def(Config, #{max_restarts => 0, max_seconds => 5}),
    P = mk(Config, R, 1),
    Mon = erlang:monitor(process, P),
    ?assertMatch({error, {record_crashed, _}}, ?REQ({fault, R, #{id => 1}, panic})),
    ?assertMatch({shutdown, {max_restarts, _}}, ash_node:down(Mon, 2000)),
    ?assertEqual({error, not_found}, ?REQ({get, R, #{id => 1}})).

exit_signals_count_towards_intensity(Config) ->
    R = def(Config, #{max_restarts => 1, max_seconds => 10}),
    P1 = mk(Config, R, 1),
    Last = updates(Config, R, 1, 2),
    M1 = erlang:monitor(process, P1),
    exit(P1, kill),
    ?assertEqual(killed, ash_node:down(M1, 2000)),
    ash_node:await(restarted, fun() -> is_pid(pid_of(Config, R, 1)) andalso
                                           pid_of(Config, R, 1) =/= P1 end, 2000),
    ?assertEqual({ok, Last}, ?REQ({get, R, #{id => 1}})),
    P2 = pid_of(Config, R, 1),
    M2 = erlang:monitor(process, P2),
    exit(P2, kill),
    ?assertEqual({shutdown, {max_restarts, killed}}, ash_node:down(M2, 2000)),
    ash_node:await(removed, fun() -> pid_of(Config, R, 1) =:= {error, not_found} end, 2000),
    ?assertEqual({error, not_found}, ?REQ({get, R, #{id => 1}})).

%% Callers racing with a crash each get an answer or an exit, never a timeout.
concurrent_callers_never_hang(Config) ->
    R = def(Config, #{max_restarts => 50, max_seconds => 10}),
    Pid = mk(Config, R, 1),
    Last = updates(Config, R, 1, 1),
    Node = ?config(node, Config),
    Parent = self(),
    Callers = [spawn(fun() ->
                             Res = [catch gen_server:call(Target, Req, 3000)
                                    || {Target, Req} <- [{{ash_gen_server, Node}, {get, R, #{id => 1}}},
                                                         {Pid, get},
                                                         {{ash_gen_server, Node},
                                                          {fault, R, #{id => 1}, panic}}]],
                             Parent ! {self(), Res}
                     end) || _ <- lists:seq(1, 10)],
    Results = lists:append([receive {C, Res} -> Res after 10000 -> ct:fail(caller_hung) end
                            || C <- Callers]),
    Timeouts = [X || {'EXIT', {timeout, _}} = X <- Results],
    ct:log("results: ~p", [Results]),
    ?assertEqual([], Timeouts),
    ?assertEqual({ok, Last}, ?REQ({get, R, #{id => 1}})).

fault_bad_requests(Config) ->
    R = def(Config, #{}),
    _ = mk(Config, R, 1),
    ?assertEqual({error, not_found}, ?REQ({fault, R, #{id => 404}, panic})),
    ?assertMatch({error, {bad_request, _}}, ?REQ({fault, R, #{id => 1}, explode})),
    ?assertMatch({error, {bad_request, _}}, ?REQ({fault, R, #{id => 1}})),
    ?assertEqual({error, {unknown_resource, no_such_resource_here}},
                 ?REQ({fault, no_such_resource_here, #{id => 1}, panic})),
    ?assertEqual({ok, #{id => 1, n => 0}}, ?REQ({get, R, #{id => 1}})).

fault_injection_disabled(Config) ->
    N2 = ash_node:start(Config, #{tag => "nofault"}),
    Node2 = ash_node:node(N2),
    try
        R = ?config(res, Config),
        ok = ash_node:call(Node2, {define, R, #{primary_key => [id], max_restarts => 0}}),
        {ok, _} = ash_node:call(Node2, {create, R, #{id => 1, n => 7}}),
        {ok, Pid} = ash_node:call(Node2, {whereis, R, #{id => 1}}),
        ?assertEqual({error, fault_injection_disabled},
                     ash_node:call(Node2, {fault, R, #{id => 1}, panic})),
        ?assertEqual({error, fault_injection_disabled},
                     ash_node:call(Node2, {fault, R, #{id => 1}, error})),
        ?assertEqual({ok, Pid}, ash_node:call(Node2, {whereis, R, #{id => 1}})),
        ?assertEqual({ok, #{id => 1, n => 7}}, ash_node:call(Node2, {get, R, #{id => 1}}))
    after
        ash_node:stop(N2)
    end.
