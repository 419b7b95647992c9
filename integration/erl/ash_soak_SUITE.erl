%% Soak: 64 callers mix create, get, update, query and destroy on records of their own, each
%% record carrying a sequence number its owner advances with guarded updates, while other
%% records expire by inactivity. Every reply is checked against the caller's own model: a get,
%% query or update that shows an older sequence number is a lost update, a newer one a reordered
%% (or phantom) one — both must be 0. Afterwards every record is destroyed and the node's RSS
%% must be within 10 % of its level after warm-up. The figures are printed.
%%
%% ASH_SOAK_SECONDS sets the duration (default 60); integration/soak.sh --minutes N runs it alone.
-module(ash_soak_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(CALLERS, 64).
-define(KEYS, 16).
-define(PAD, 256).
-define(TIMEOUT, 30000).

all() -> [soak].

suite() -> [{timetrap, {hours, 12}}].

init_per_suite(Config) ->
    ash_node:start_suite(Config, #{tag => "soak"}).

end_per_suite(Config) ->
    ash_node:stop_suite(Config).

seconds() ->
    case os:getenv("ASH_SOAK_SECONDS") of
        false -> 60;
        "" -> 60;
        S -> list_to_integer(S)
    end.

call(Node, Req) -> gen_server:call({ash_gen_server, Node}, Req, ?TIMEOUT).

stats(Node) ->
    {ok, S} = call(Node, stats),
    S.

soak(Config) ->
    Node = ?config(node, Config),
    Seconds = seconds(),
    WarmUp = max(10, Seconds div 6),
    Main = ash_node:define(Node, ash_node:uniq_res(soak_main), #{primary_key => [id]}),
    Expiring = ash_node:define(Node, ash_node:uniq_res(soak_expiring),
                               #{primary_key => [id], inactivity_timeout => 300}),
    Parent = self(),
    T0 = erlang:monotonic_time(millisecond),
    Deadline = T0 + Seconds * 1000,
    Callers = [spawn_link(fun() ->
                                  rand:seed(exsss, {C, 7, 11}),
                                  S = caller(Node, Main, Expiring, C, Deadline, #{}, #{}),
                                  Parent ! {done, self(), S}
                          end) || C <- lists:seq(1, ?CALLERS)],
    timer:sleep(WarmUp * 1000),
    %% The level after warm-up: the highest RSS over the next 5 s of load.
    WarmSamples = [begin timer:sleep(1000), stats(Node) end || _ <- lists:seq(1, 5)],
    Warm = lists:last(lists:sort(fun(A, B) -> maps:get(rss_bytes, A) =< maps:get(rss_bytes, B) end,
                                 WarmSamples)),
    ct:pal("soak: warm-up after ~b s: ~b records, RSS ~.1f MiB",
           [WarmUp + 5, maps:get(records, Warm), mib(maps:get(rss_bytes, Warm))]),
    Samples = sample(Node, Deadline, []),
    Results = [receive {done, C, S} -> S after Seconds * 1000 + 120000 -> ct:fail(caller_hangs) end
               || C <- Callers],
    Elapsed = (erlang:monotonic_time(millisecond) - T0) / 1000,
    Totals = lists:foldl(fun(S, Acc) -> maps:fold(fun(K, V, A) -> maps:update_with(K, fun(X) -> X + V end, V, A) end, Acc, S) end,
                         #{}, [maps:get(counts, S) || S <- Results]),
    Violations = lists:append([maps:get(violations, S) || S <- Results]),
    %% Every record goes: the callers' by destroy, the expiring ones by expiry.
    [ok = call(Node, {destroy, Main, #{id => K}}) || S <- Results, K <- maps:keys(maps:get(model, S))],
    ?assertMatch({ok, #{count := 0}}, call(Node, {info, Main})),
    ok = wait(fun() -> {ok, #{count := N}} = call(Node, {info, Expiring}), N =:= 0 end, 30000),
    timer:sleep(1000),
    End = stats(Node),
    Ops = lists:sum(maps:values(Totals)),
    PeakRss = lists:max([maps:get(rss_bytes, Warm) | [R || {R, _} <- Samples]]),
    PeakRecords = lists:max([maps:get(records, Warm) | [N || {_, N} <- Samples]]),
    WarmRss = maps:get(rss_bytes, Warm),
    EndRss = maps:get(rss_bytes, End),
    ct:pal("soak: ~b callers for ~.1f s: ~b operations (~b/s): ~p~n"
           "soak: lost or reordered updates: ~b~n"
           "soak: records at warm-up ~b, peak ~b, at the end ~b~n"
           "soak: RSS after warm-up ~.1f MiB, peak ~.1f MiB, after destroying every record ~.1f MiB (~.1f %)",
           [?CALLERS, Elapsed, Ops, round(Ops / Elapsed), Totals, length(Violations),
            maps:get(records, Warm), PeakRecords, maps:get(records, End),
            mib(WarmRss), mib(PeakRss), mib(EndRss), 100 * (EndRss - WarmRss) / WarmRss]),
    %% The RSS and record count every tenth sample (about every 10 s): a leak grows with
    %% time, a high-water mark follows the peak of records and load.
    Series = [io_lib:format("~.1f MiB/~b", [mib(R), N])
              || {I, {R, N}} <- lists:zip(lists:seq(1, length(Samples)), lists:reverse(Samples)),
                 I rem 10 =:= 0],
    ct:pal("soak: RSS/records every 10 s: ~s", [lists:join(", ", Series)]),
    ?assertEqual([], lists:sublist(Violations, 10)),
    ?assertEqual(0, maps:get(records, End)),
    ?assert(maps:get(expired, Totals, 0) > 0),
    ?assert(EndRss =< WarmRss * 1.10),
    ok.

mib(Bytes) -> Bytes / (1024 * 1024).

sample(Node, Deadline, Acc) ->
    case erlang:monotonic_time(millisecond) >= Deadline of
        true -> Acc;
        false ->
            timer:sleep(1000),
            S = stats(Node),
            sample(Node, Deadline, [{maps:get(rss_bytes, S), maps:get(records, S)} | Acc])
    end.

wait(Fun, Timeout) ->
    case ash_node:poll(Fun, Timeout, 100) of
        true -> ok;
        false -> timeout
    end.

%% ---------------------------------------------------------------------------------------------
%% A caller: its model is Key => Seq for its own records.

caller(Node, Main, Expiring, C, Deadline, Model, Counts) ->
    caller(Node, Main, Expiring, C, Deadline, Model, Counts, [], 0).

caller(Node, Main, Expiring, C, Deadline, Model, Counts, Violations, N) ->
    case erlang:monotonic_time(millisecond) >= Deadline of
        true -> #{model => Model, counts => Counts, violations => Violations};
        false ->
            Key = {C, rand:uniform(?KEYS)},
            Op = pick(rand:uniform(100)),
            {Model1, Bad} = op(Op, Node, Main, Expiring, C, Key, Model, N),
            caller(Node, Main, Expiring, C, Deadline, Model1,
                   maps:update_with(Op, fun(X) -> X + 1 end, 1, Counts),
                   Bad ++ Violations, N + 1)
    end.

pick(X) when X =< 15 -> create;
pick(X) when X =< 45 -> get;
pick(X) when X =< 75 -> update;
pick(X) when X =< 85 -> query;
pick(X) when X =< 95 -> destroy;
pick(_) -> expired.

pad(Key) -> binary:copy(term_to_binary(Key), ?PAD div 16).

op(create, Node, Main, _, C, Key, Model, _) ->
    Rec = #{id => Key, owner => C, seq => 0, pad => pad(Key)},
    case {maps:find(Key, Model), call(Node, {create, Main, Rec})} of
        {error, {ok, Rec}} -> {Model#{Key => 0}, []};
        {{ok, _}, {error, {already_exists, #{id := Key}}}} -> {Model, []};
        {Known, Got} -> {Model, [{create, Key, Known, Got}]}
    end;
op(get, Node, Main, _, _, Key, Model, _) ->
    case {maps:find(Key, Model), call(Node, {get, Main, #{id => Key}})} of
        {{ok, S}, {ok, #{seq := S}}} -> {Model, []};
        {error, {error, not_found}} -> {Model, []};
        {Known, Got} -> {Model, [{get, Key, Known, seq_of(Got)}]}
    end;
op(update, Node, Main, _, _, Key, Model, _) ->
    case maps:find(Key, Model) of
        {ok, S} ->
            case call(Node, {update, Main, #{id => Key}, #{seq => S + 1},
                             #{filter => {eq, seq, S}}}) of
                {ok, #{seq := S1}} when S1 =:= S + 1 -> {Model#{Key := S + 1}, []};
                Got -> {Model, [{update, Key, S, seq_of(Got)}]}
            end;
        error ->
            case call(Node, {update, Main, #{id => Key}, #{seq => 1}}) of
                {error, not_found} -> {Model, []};
                Got -> {Model, [{update_absent, Key, Got}]}
            end
    end;
op(query, Node, Main, _, C, _, Model, _) ->
    {ok, Recs} = call(Node, {query, Main, #{filter => {eq, owner, C},
                                            select => [seq]}}),
    Got = maps:from_list([{Id, S} || #{id := Id, seq := S} <- Recs]),
    case Got =:= Model of
        true -> {Model, []};
        false -> {Model, [{query, C, Model, Got}]}
    end;
op(destroy, Node, Main, _, _, Key, Model, _) ->
    case {maps:find(Key, Model), call(Node, {destroy, Main, #{id => Key}})} of
        {{ok, _}, ok} -> {maps:remove(Key, Model), []};
        {error, {error, not_found}} -> {Model, []};
        {Known, Got} -> {Model, [{destroy, Key, Known, Got}]}
    end;
op(expired, Node, _, Expiring, C, _, Model, N) ->
    %% created and never touched again: it expires by inactivity
    Key = {C, N},
    {ok, _} = call(Node, {create, Expiring, #{id => Key, pad => pad(Key)}}),
    {Model, []}.

seq_of({ok, #{seq := S}}) -> {seq, S};
seq_of(Other) -> Other.
