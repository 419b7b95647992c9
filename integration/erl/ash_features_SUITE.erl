%% The node features Ash's atomic updates, bulk actions by query, typed filters, tenants and
%% identities rest on, from plain Erlang over a real distribution connection: value
%% expressions and atomics (raced from many processes), update_where/destroy_where, typed
%% fields with the Elixir structs Ash stores, {Resource, Tenant} namespaces and identities with
%% where/nils_distinct/ci_string.
-module(ash_features_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(REQ(R), ash_node:req(Config, R)).

all() ->
    [atomic_increments_race_exactly, atomics_fail_without_changes, upsert_atomics_and_conditions,
     racing_bulk_upserts_with_atomics_count_exactly, typed_times_and_naive_datetimes,
     racing_guarded_updates_have_one_winner, racing_identity_upserts_leave_one_record,
     identity_upserts_race_updates_that_change_the_identity,
     update_where_and_destroy_where, typed_dates_datetimes_and_decimals, ci_string_identities,
     identities_with_where_and_nils_not_distinct, tenants_never_see_each_other,
     tenants_expire_with_their_tenant].

init_per_suite(Config) ->
    ash_node:start_suite(Config, #{tag => "features"}).

end_per_suite(Config) ->
    ash_node:stop_suite(Config).

init_per_testcase(TC, Config) ->
    [{res, ash_node:uniq_res(TC)} | Config].

end_per_testcase(_, _) -> ok.

inc(Field) -> {Field, {'+', {ref, Field}, {value, 1}}}.

%% Runs Fun in N processes at once (released together) and returns their results.
race(N, Fun) ->
    Parent = self(),
    Go = make_ref(),
    Pids = [spawn_link(fun() ->
                               receive Go -> ok end,
                               Parent ! {self(), Fun(I)}
                       end) || I <- lists:seq(1, N)],
    [P ! Go || P <- Pids],
    [receive {P, Result} -> Result after 20000 -> error({no_result, P}) end || P <- Pids].

atomic_increments_race_exactly(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id]}}),
    %% Repeated: each round 64 processes increment one counter at once.
    [begin
         {ok, _} = ?REQ({create, R, #{id => Round, n => 0}}),
         Replies = race(64, fun(_) ->
                                    ?REQ({update, R, #{id => Round}, #{},
                                          #{atomics => [inc(n)]}})
                            end),
         ?assertEqual(64, length([ok || {ok, _} <- Replies])),
         ?assertEqual({ok, #{id => Round, n => 64}}, ?REQ({get, R, #{id => Round}})),
         %% Every reply saw a distinct value: each increment had its own turn.
         ?assertEqual(lists:seq(1, 64), lists:sort([N || {ok, #{n := N}} <- Replies]))
     end || Round <- lists:seq(1, 5)].

atomics_fail_without_changes(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id]}}),
    {ok, _} = ?REQ({create, R, #{id => 1, n => 5, name => <<"a">>}}),
    Guarded = {n, {'if', {gt, {'+', {ref, n}, {value, 1}}, {value, 6}},
                   {error, {too_big, <<"n">>}}, {'+', {ref, n}, {value, 1}}}},
    ?assertEqual({ok, #{id => 1, n => 6, name => <<"a">>}},
                 ?REQ({update, R, #{id => 1}, #{}, #{atomics => [Guarded]}})),
    ?assertEqual({error, {expr_error, {too_big, <<"n">>}}},
                 ?REQ({update, R, #{id => 1}, #{name => <<"b">>}, #{atomics => [Guarded]}})),
    ?assertEqual({error, {expr_error, {arithmetic, '+', <<"a">>, 1}}},
                 ?REQ({update, R, #{id => 1}, #{}, #{atomics => [inc(name)]}})),
    ?assertEqual({ok, #{id => 1, n => 6, name => <<"a">>}}, ?REQ({get, R, #{id => 1}})),
    %% Every expression sees the record as it was.
    ?assertEqual({ok, #{id => 1, n => 7, m => 6, name => <<"a!">>}},
                 ?REQ({update, R, #{id => 1}, #{},
                       #{atomics => [inc(n), {m, {ref, n}},
                                     {name, {concat, [{ref, name}, {value, <<"!">>}]}}]}})),
    ?assertMatch({error, {bad_request, _}},
                 ?REQ({update, R, #{id => 1}, #{}, #{atomics => [{n, {nope}}]}})),
    ?assertMatch({ok, [#{id := 1}]},
                 ?REQ({query, R, #{filter => {expr, {eq, {ref, n}, {'+', {ref, m}, {value, 1}}}}}})).

upsert_atomics_and_conditions(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id]}}),
    Upsert = fun(V) ->
                     ?REQ({upsert, R, #{id => 1, version => V, seen => 1},
                           #{fields => [version], atomics => [inc(seen)],
                             condition => {expr, {gt, {incoming, version}, {ref, version}}}}})
             end,
    ?assertEqual({ok, created, #{id => 1, version => 1, seen => 1}}, Upsert(1)),
    ?assertEqual({ok, updated, #{id => 1, version => 3, seen => 2}}, Upsert(3)),
    ?assertEqual({ok, skipped, #{id => 1, version => 3, seen => 2}}, Upsert(2)).

racing_bulk_upserts_with_atomics_count_exactly(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id]}}),
    %% 8 processes at once, each a bulk upsert of the same 5 keys incrementing `hits` on
    %% conflict: one creates each record (hits 1), the 7 others increment it.
    Replies = race(8, fun(_) ->
                              ?REQ({bulk_create, R,
                                    [#{id => I, hits => 1, name => <<"p">>} || I <- lists:seq(1, 5)],
                                    #{upsert => true, fields => [name],
                                      atomics => [inc(hits)]}})
                      end),
    Results = lists:append([Rs || {ok, Rs} <- Replies]),
    ?assertEqual(40, length(Results)),
    ?assertEqual(5, length([c || {ok, created, _} <- Results])),
    ?assertEqual(35, length([u || {ok, updated, _} <- Results])),
    ?assertEqual({ok, [#{id => I, hits => 8, name => <<"p">>} || I <- lists:seq(1, 5)]},
                 ?REQ({query, R, #{sort => [{id, asc}]}})).

racing_guarded_updates_have_one_winner(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id]}}),
    [begin
         {ok, _} = ?REQ({create, R, #{id => Round, owner => nil}}),
         Replies = race(64, fun(I) ->
                                    ?REQ({update, R, #{id => Round}, #{owner => I},
                                          #{filter => {is_nil, owner}}})
                            end),
         ?assertEqual(1, length([ok || {ok, _} <- Replies])),
         ?assertEqual(63, length([stale || {error, stale} <- Replies]))
     end || Round <- lists:seq(1, 10)].

racing_identity_upserts_leave_one_record(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id], identities => [{email, [email]}]}}),
    [begin
         Email = iolist_to_binary(io_lib:format("u~b@x", [Round])),
         Replies = race(64, fun(I) ->
                                    ?REQ({upsert, R, #{id => Round * 1000 + I, email => Email,
                                                       n => I}, #{keys => [email]}})
                            end),
         ?assertEqual(1, length([c || {ok, created, _} <- Replies])),
         ?assertEqual(63, length([u || {ok, updated, _} <- Replies])),
         ?assertMatch({ok, [_]}, ?REQ({query, R, #{filter => {eq, email, Email}}}))
     end || Round <- lists:seq(1, 10)].

%% Upserts by identity race updates that move the identity's value away from the record that
%% has it. Each round, 8 records each have an email that 1 updater changes (`a` -> `b`) while 7
%% upserters upsert by that email 4 times each, most with a condition that fails on the original
%% record. The upserters run on 3 peer nodes, so their calls come over connections of their own,
%% served concurrently with the updates (one connection's requests are served in order). Whatever
%% the interleaving, an upsert only ever lands on (or is skipped by) a record that has the email
%% it asked for: every reply carries that email, nothing changed an original record after its
%% update took the email away, and no email is left on two records.
identity_upserts_race_updates_that_change_the_identity(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id], identities => [{by_email, [email]}]}}),
    Groups = 8,
    Rounds = 25,
    Peers = [ash_node:start_peer("upserter" ++ integer_to_list(P), #{}) || P <- lists:seq(1, 3)],
    try
        Outcomes =
            lists:append(
              [begin
                   [{ok, _} = ?REQ({create, R, #{id => {Round, G}, email => email(Round, G, "a"),
                                                 v => 1000, tag => none}})
                    || G <- lists:seq(1, Groups)],
                   %% upserter K of each group runs on peer K rem 3
                   Upserters = [{Peer, [{G, K} || G <- lists:seq(1, Groups), K <- lists:seq(1, 7),
                                                  K rem 3 =:= P - 1]}
                                || {P, {Peer, _}} <- lists:zip(lists:seq(1, 3), Peers)],
                   Tasks = [{update, G} || G <- lists:seq(1, Groups)]
                       ++ [{upserts, Peer, Mine} || {Peer, Mine} <- Upserters],
                   Replies = lists:append(
                               race(length(Tasks),
                                    fun(I) ->
                                            identity_race_task(Config, R, Round,
                                                               lists:nth(I, Tasks))
                                    end)),
                   [check_identity_round(Config, R, email(Round, G, "a"), email(Round, G, "b"),
                                         {Round, G},
                                         [Reply || {_, G1, _} = Reply <- Replies, G1 =:= G])
                    || G <- lists:seq(1, Groups)]
               end || Round <- lists:seq(1, Rounds)]),
        Counts = lists:foldl(fun(O, Acc) -> maps:update_with(O, fun(C) -> C + 1 end, 1, Acc) end,
                             #{}, lists:append(Outcomes)),
        ct:log("~b races: upsert outcomes ~p", [Groups * Rounds, Counts])
    after
        [ash_node:stop_peer(Peer) || {Peer, _} <- Peers]
    end.

email(Round, G, Side) -> iolist_to_binary(io_lib:format("~s~b_~b", [Side, Round, G])).

identity_race_task(Config, R, Round, {update, G}) ->
    %% a few reads first, so that the update comes amid the upserts rather than before them
    [{ok, _} = ?REQ({get, R, #{id => {Round, G}}}) || _ <- lists:seq(1, Round rem 4)],
    [{update, G, ?REQ({update, R, #{id => {Round, G}}, #{email => email(Round, G, "b")}})}];
identity_race_task(Config, R, Round, {upserts, Peer, Mine}) ->
    Node = ?config(node, Config),
    ash_node:peer_call(Peer, erlang, apply,
                       [fun ?MODULE:peer_upserts/4, [Node, R, Round, Mine]]).

%% On a peer: each upserter {G, K} in a process of its own, 4 upserts in a row.
peer_upserts(Node, R, Round, Mine) ->
    Config = [{node, Node}],
    lists:append(
      race(length(Mine),
           fun(I) ->
                   {G, K} = lists:nth(I, Mine),
                   [{upsert, G, identity_upsert(Config, R, email(Round, G, "a"), {Round, G, K, J})}
                    || J <- lists:seq(1, 4)]
           end)).

%% An upsert by email; three in four with a condition that fails on the original record (v 1000).
identity_upsert(Config, R, Email, {_, _, K, J} = Id) ->
    Rec = #{id => Id, email => Email, v => K * 10 + J, tag => {upsert, K, J}},
    Opts = #{keys => [email], fields => [tag]},
    case (K + J) rem 4 of
        0 -> ?REQ({upsert, R, Rec, Opts});
        _ -> ?REQ({upsert, R, Rec, Opts#{condition => {expr, {gt, {incoming, v}, {ref, v}}}}})
    end.

%% One record's race: returns each upsert's outcome kind (created, updated, skipped).
check_identity_round(Config, R, A, B, Id, Replies) ->
    [{update, _, {ok, Moved}}] = [U || {update, _, _} = U <- Replies],
    ?assertMatch(#{id := Id, email := B}, Moved),
    Upserts = [Reply || {upsert, _, Reply} <- Replies],
    %% every upsert answered with a record that has the email it asked for
    ?assertEqual([], [U || U <- Upserts, not identity_reply(U, A)]),
    %% nothing touched the original record once its email had gone: it is as the update left it
    ?assertEqual({ok, Moved}, ?REQ({get, R, #{id => Id}})),
    %% no duplicates: at most one record has email a, exactly one has b
    {ok, WithA} = ?REQ({query, R, #{filter => {eq, email, A}}}),
    ?assert(length(WithA) =< 1),
    ?assertMatch({ok, [#{id := Id}]}, ?REQ({query, R, #{filter => {eq, email, B}}})),
    [Kind || {ok, Kind, _} <- Upserts].

identity_reply({ok, Kind, #{email := Email}}, Email) ->
    lists:member(Kind, [created, updated, skipped]);
identity_reply(_, _) -> false.

update_where_and_destroy_where(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id], inactivity_timeout => 600000}}),
    [{ok, _} = ?REQ({create, R, #{id => I, team => I rem 3, n => I}}) || I <- lists:seq(1, 30)],
    {ok, Updated} = ?REQ({update_where, R, #{filter => {eq, team, 0}, sort => [{id, asc}]},
                          #{set => #{flag => true}, atomics => [inc(n)]}}),
    ?assertEqual([{I, I + 1, true} || I <- lists:seq(3, 30, 3)],
                 [{Id, N, F} || #{id := Id, n := N, flag := F} <- Updated]),
    ?assertEqual({ok, 5}, ?REQ({update_where, R, #{filter => {eq, team, 1}, limit => 5},
                                #{set => #{flag => false}, return => count}})),
    ?assertEqual({error, {expr_error, stop}},
                 ?REQ({update_where, R, #{},
                       #{atomics => [{n, {'if', {gt, {ref, n}, {value, 29}}, {error, stop},
                                          {ref, n}}}]}})),
    ?assertMatch({ok, [#{id := 30, n := 31}]}, ?REQ({query, R, #{filter => {eq, id, 30}}})),
    {ok, Pid} = ?REQ({whereis, R, #{id => 2}}),
    Mon = erlang:monitor(process, Pid),
    ?assertEqual({ok, 10}, ?REQ({destroy_where, R, #{filter => {eq, team, 2}},
                                 #{return => count}})),
    ?assertEqual(normal, ash_node:down(Mon, 5000)),
    {ok, Destroyed} = ?REQ({destroy_where, R, #{sort => [{id, desc}], limit => 2}}),
    ?assertEqual([30, 28], [Id || #{id := Id} <- Destroyed]),
    ?assertMatch({ok, #{count := 18}}, ?REQ({info, R})).

date(Y, M, D) ->
    #{'__struct__' => 'Elixir.Date', calendar => 'Elixir.Calendar.ISO', year => Y,
      month => M, day => D}.

datetime(Y, Mo, D, H, Offset) ->
    #{'__struct__' => 'Elixir.DateTime', calendar => 'Elixir.Calendar.ISO', year => Y,
      month => Mo, day => D, hour => H, minute => 0, second => 0, microsecond => {0, 6},
      time_zone => <<"Etc/UTC">>, zone_abbr => <<"UTC">>, utc_offset => Offset,
      std_offset => 0}.

decimal(Sign, Coef, Exp) ->
    #{'__struct__' => 'Elixir.Decimal', sign => Sign, coef => Coef, exp => Exp}.

typed_dates_datetimes_and_decimals(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id],
                            types => #{on => date, at => datetime, price => decimal}}}),
    Rows = [{1, date(2024, 1, 31), datetime(2024, 5, 1, 10, 7200), decimal(1, 150, -2)},
            {2, date(2025, 1, 1), datetime(2024, 5, 1, 9, 0), decimal(1, 2, 0)},
            {3, date(2024, 12, 1), datetime(2024, 5, 1, 8, 0), decimal(-1, 5, 0)},
            {4, nil, nil, nil}],
    [{ok, _} = ?REQ({create, R, #{id => I, on => On, at => At, price => P}})
     || {I, On, At, P} <- Rows],
    Ids = fun(Q) -> {ok, Recs} = ?REQ({query, R, Q}), [Id || #{id := Id} <- Recs] end,
    ?assertEqual([2, 3, 1], Ids(#{filter => {'not', {is_nil, on}}, sort => [{on, desc}]})),
    ?assertEqual([3, 2], Ids(#{filter => {gt, on, date(2024, 6, 1)}, sort => [{on, asc}]})),
    %% 10:00 at +02:00 is 08:00 UTC: the same instant as record 3's.
    ?assertEqual([1, 3], Ids(#{filter => {eq, at, datetime(2024, 5, 1, 8, 0)},
                               sort => [{id, asc}]})),
    ?assertEqual([3, 1, 2], Ids(#{filter => {'not', {is_nil, price}},
                                  sort => [{price, asc}, {id, asc}]})),
    ?assertEqual([1], Ids(#{filter => {eq, price, decimal(1, 15, -1)}})),
    ?assertEqual([4, 3, 1, 2], Ids(#{sort => [{price, asc_nils_first}]})),
    ?assertEqual({ok, #{lo => decimal(-1, 5, 0), hi => date(2025, 1, 1)}},
                 ?REQ({aggregate, R, #{}, [{lo, min, price, #{}}, {hi, max, on, #{}}]})),
    %% Values come back exactly as stored.
    ?assertEqual({ok, #{id => 1, on => date(2024, 1, 31), at => datetime(2024, 5, 1, 10, 7200),
                        price => decimal(1, 150, -2)}}, ?REQ({get, R, #{id => 1}})).

time(H, Mi, S, Us) ->
    #{'__struct__' => 'Elixir.Time', calendar => 'Elixir.Calendar.ISO', hour => H,
      minute => Mi, second => S, microsecond => Us}.

naive(Y, Mo, D, H, Mi) ->
    #{'__struct__' => 'Elixir.NaiveDateTime', calendar => 'Elixir.Calendar.ISO', year => Y,
      month => Mo, day => D, hour => H, minute => Mi, second => 0, microsecond => {0, 0}}.

typed_times_and_naive_datetimes(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id], types => #{t => time, at => naive_datetime}}}),
    %% Term order would get these wrong: maps compare key by key (for a Time: calendar, hour,
    %% microsecond, minute...; for a NaiveDateTime: calendar, day, hour...), so 10:00:59.5
    %% would sort after 10:01 and 2024-12-31 after 2025-01-01.
    Rows = [{1, time(10, 0, 59, {500000, 6}), naive(2025, 1, 1, 0, 0)},
            {2, time(10, 1, 0, {0, 0}), naive(2024, 12, 31, 23, 59)},
            {3, time(9, 0, 0, {0, 0}), naive(2024, 2, 29, 12, 0)},
            {4, nil, nil}],
    [{ok, _} = ?REQ({create, R, #{id => I, t => T, at => At}}) || {I, T, At} <- Rows],
    Ids = fun(Q) -> {ok, Recs} = ?REQ({query, R, Q}), [Id || #{id := Id} <- Recs] end,
    ?assertEqual([3, 1, 2], Ids(#{filter => {'not', {is_nil, t}}, sort => [{t, asc}]})),
    ?assertEqual([1, 2], Ids(#{filter => {gte, t, time(10, 0, 0, {0, 6})}, sort => [{t, asc}]})),
    ?assertEqual([1], Ids(#{filter => {lt, t, time(10, 1, 0, {0, 0})},
                            sort => [{t, desc}], limit => 1})),
    %% 10:01:00 and 10:01:00.000000 are the same time of day, whatever the precision.
    ?assertEqual([2], Ids(#{filter => {eq, t, time(10, 1, 0, {0, 6})}})),
    ?assertEqual([1, 2, 3], Ids(#{filter => {'not', {is_nil, at}}, sort => [{at, desc}]})),
    ?assertEqual([1], Ids(#{filter => {gt, at, naive(2024, 12, 31, 23, 59)}})),
    ?assertEqual([4, 3, 2, 1], Ids(#{sort => [{at, asc_nils_first}]})),
    ?assertEqual({ok, #{lo => time(9, 0, 0, {0, 0}), hi => naive(2025, 1, 1, 0, 0)}},
                 ?REQ({aggregate, R, #{}, [{lo, min, t, #{}}, {hi, max, at, #{}}]})),
    %% Values come back exactly as stored.
    ?assertEqual({ok, #{id => 1, t => time(10, 0, 59, {500000, 6}),
                        at => naive(2025, 1, 1, 0, 0)}},
                 ?REQ({get, R, #{id => 1}})).

ci_string_identities(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id], types => #{email => ci_string},
                            identities => [{email, [email]}]}}),
    {ok, _} = ?REQ({create, R, #{id => 1, email => <<"Ann@X.org">>}}),
    ?assertMatch({error, {identity_conflict, email, _}},
                 ?REQ({create, R, #{id => 2, email => <<"ann@x.ORG">>}})),
    ?assertMatch({ok, updated, #{id := 1, email := <<"Ann@X.org">>}},
                 ?REQ({upsert, R, #{id => 3, email => <<"ANN@x.org">>, n => 1},
                       #{keys => [email], fields => [n]}})),
    ?assertMatch({ok, [#{id := 1}]}, ?REQ({query, R, #{filter => {eq, email, <<"aNN@x.org">>}}})).

identities_with_where_and_nils_not_distinct(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id],
                            identities => [{active_name, [name],
                                            #{where => {eq, active, true}}},
                                           {slot, [slot], #{nils_distinct => false}}]}}),
    {ok, _} = ?REQ({create, R, #{id => 1, name => a, active => true, slot => 1}}),
    {ok, _} = ?REQ({create, R, #{id => 2, name => a, active => false, slot => 2}}),
    ?assertMatch({error, {identity_conflict, active_name, _}},
                 ?REQ({update, R, #{id => 2}, #{active => true}})),
    {ok, _} = ?REQ({create, R, #{id => 3, name => b, active => true}}),
    ?assertEqual({error, {identity_conflict, slot, #{slot => nil}}},
                 ?REQ({create, R, #{id => 4, name => c, active => true}})).

tenants_never_see_each_other(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id], identities => [{slug, [slug]}]}}),
    A = {R, <<"a">>},
    B = {R, <<"b">>},
    {ok, _} = ?REQ({create, A, #{id => 1, slug => x, v => a}}),
    {ok, _} = ?REQ({create, B, #{id => 1, slug => x, v => b}}),
    ?assertMatch({error, {identity_conflict, slug, _}}, ?REQ({create, A, #{id => 2, slug => x}})),
    ?assertEqual({ok, [#{id => 1, slug => x, v => b}]}, ?REQ({query, B, #{}})),
    ?assertEqual({ok, []}, ?REQ({query, R, #{}})),
    ?assertEqual({error, not_found}, ?REQ({get, {R, <<"c">>}, #{id => 1}})),
    {ok, 1} = ?REQ({update_where, A, #{}, #{set => #{v => aa}, return => count}}),
    ?assertEqual({ok, #{id => 1, slug => x, v => b}}, ?REQ({get, B, #{id => 1}})),
    ?assertEqual({ok, 1}, ?REQ({destroy_where, B, #{}, #{return => count}})),
    ?assertEqual({ok, #{id => 1, slug => x, v => aa}}, ?REQ({get, A, #{id => 1}})),
    ?assertEqual({ok, 1}, ?REQ({clear, R})),
    ?assertEqual({error, not_found}, ?REQ({get, A, #{id => 1}})).

tenants_expire_with_their_tenant(Config) ->
    R = ?config(res, Config),
    ok = ?REQ({define, R, #{primary_key => [id], inactivity_timeout => 200}}),
    ok = ?REQ({subscribe, [R]}),
    {ok, _} = ?REQ({create, {R, t1}, #{id => 7}}),
    receive
        {ash_gen_server, expired, #{resource := R, tenant := t1, primary_key := #{id := 7}}} ->
            ok = ?REQ({destroy, {R, t1}, #{id => 7}})
    after 10000 -> ct:fail(no_expiry_notice)
    end,
    ok = ?REQ(unsubscribe),
    ?assertEqual({error, not_found}, ?REQ({get, {R, t1}, #{id => 7}})).
