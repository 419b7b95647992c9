%% Values round-trip exactly (=:=) through the node: as field values, as primary keys, in
%% filters, through updates, queries and aggregates.
-module(ash_values_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(REQ(R), ash_node:req(Config, R)).

all() ->
    [binaries, integers, floats, atoms, special_atoms, lists, improper_lists, strings,
     tuples, maps_as_values, pids_and_refs, ports_funs_and_bitstrings, everything_in_one_record,
     values_as_primary_keys,
     values_through_update_query_aggregate, large_record].

init_per_suite(Config) ->
    ash_node:start_suite(Config, #{tag => "values"}).

end_per_suite(Config) ->
    ash_node:stop_suite(Config).

init_per_testcase(TC, Config) ->
    R = ash_node:uniq_res(TC),
    ok = ash_node:req(Config, {define, R, #{primary_key => [id]}}),
    [{res, R} | Config].

end_per_testcase(_, _) -> ok.

%% Creates one record per value, reads each back with get and compares exactly.
roundtrip(Config, Values) ->
    R = ?config(res, Config),
    Base = erlang:unique_integer([positive]) * 10000,
    Indexed = lists:zip(lists:seq(Base, Base + length(Values) - 1), Values),
    Bad = lists:append(
            [begin
                 Rec = #{id => I, v => V},
                 Created = ?REQ({create, R, Rec}),
                 Got = ?REQ({get, R, #{id => I}}),
                 [{create, V, Created} || Created =/= {ok, Rec}] ++
                     [{get, V, Got} || Got =/= {ok, Rec}]
             end || {I, V} <- Indexed]),
    [ct:log("~p of ~P~n  answered ~P", [Op, V, 20, Reply, 20]) || {Op, V, Reply} <- Bad],
    ?assertEqual([], [{Op, V} || {Op, V, _} <- Bad]).

binaries(Config) ->
    roundtrip(Config, [<<>>, <<"a">>, <<"hello world">>, <<0>>, <<255, 254, 0, 1>>,
                       <<"ünïcödé ✓"/utf8>>, <<16#C3, 16#28>>, <<16#FF, 16#FE, 16#FD>>,
                       list_to_binary(lists:duplicate(70000, $x)),
                       crypto:strong_rand_bytes(1 bsl 20),
                       binary:copy(<<0>>, 300)]).

integers(Config) ->
    roundtrip(Config, [0, 1, -1, 255, 256, -128, -129, 2147483647, -2147483648, 2147483648,
                       -2147483649, 1 bsl 59, (1 bsl 63) - 1, 1 bsl 63, -(1 bsl 63),
                       1 bsl 64, -(1 bsl 64), (1 bsl 64) + 1, -(1 bsl 100), 1 bsl 100,
                       1 bsl 1000, -(1 bsl 2040) + 7, 12345678901234567890123456789]).

floats(Config) ->
    roundtrip(Config, [0.0, 1.0, -1.0, 1.5, -2.25, 3.141592653589793, 1.0e300, -1.0e-300,
                       5.0e-324, 1.7976931348623157e308, 0.1, 1.0e15, 123456789.123456789]).

atoms(Config) ->
    Long = list_to_atom(lists:duplicate(255, $a)),
    roundtrip(Config, [a, 'Elixir.MyApp.Post', '', 'with space', 'ünïcödé', '日本語', '✓',
                       'UPPER', Long, list_to_atom([16#1F600]), 'a\'quote']).

special_atoms(Config) ->
    roundtrip(Config, [nil, true, false, undefined, ok, error]),
    R = ash_node:uniq_res(special_atoms_filters),
    ok = ?REQ({define, R, #{primary_key => [id]}}),
    %% false and nil stay distinct, and true is not 1
    ok = create(Config, R, #{id => 1, v => false}),
    ok = create(Config, R, #{id => 2, v => nil}),
    ok = create(Config, R, #{id => 3, v => true}),
    ok = create(Config, R, #{id => 4, v => 1}),
    ?assertMatch({ok, [#{id := 1}]}, ?REQ({query, R, #{filter => {eq, v, false}}})),
    ?assertMatch({ok, [#{id := 3}]}, ?REQ({query, R, #{filter => {eq, v, true}}})).

create(Config, R, Rec) ->
    ?assertEqual({ok, Rec}, ?REQ({create, R, Rec})),
    ok.

lists(Config) ->
    roundtrip(Config, [[], [1], [1, 2, 3], [-1], [-2], [1, -1], [0, 255], [256], [-128, 127],
                       [300, 2], [1 bsl 64], [1.5], [a, b], [[1], [2, [3]]], [[]],
                       [<<"x">>, 1, a, {t}], lists:seq(1, 1000), lists:seq(-500, 500),
                       lists:duplicate(70000, 7)]).

improper_lists(Config) ->
    roundtrip(Config, [[a | b], [1, 2 | 3], [1 | <<"tail">>], [[] | []], [x | {t}],
                       [1 | 2.5], [a, b | #{}]]).

strings(Config) ->
    roundtrip(Config, ["", "abc", "hello world", [0], [255], lists:seq(0, 255),
                       "ünïcödé", [16#65E5, 16#672C], [16#1F600], [1000, 2000, 65],
                       lists:duplicate(65535, $a), lists:duplicate(65536, $b),
                       lists:duplicate(70000, 300)]).

tuples(Config) ->
    Big = list_to_tuple(lists:seq(1, 300)),
    roundtrip(Config, [{}, {a}, {1, 2, 3}, {ok, <<"x">>}, {error, {nested, {deep}}},
                       {nil, true, false}, Big, {[], #{}, <<>>, ""}]).

maps_as_values(Config) ->
    Big = maps:from_list([{I, I * I} || I <- lists:seq(1, 100)]),
    roundtrip(Config, [#{}, #{a => 1}, #{a => #{b => #{c => [1, #{d => <<"e">>}]}}},
                       #{<<"k">> => 1, 1 => 2, {t} => 3, [l] => 4, 1.5 => five, nil => x,
                         #{inner => key} => map_key, <<>> => empty},
                       Big, #{"string key" => "string value"}, #{1 => 1, 1.0 => 2}]).

pids_and_refs(Config) ->
    Self = self(),
    Other = spawn(fun() -> receive stop -> ok end end),
    Ref = make_ref(),
    Alias = alias(),
    R = ?config(res, Config),
    ok = create(Config, R, #{id => 0, v => peer}),
    {ok, RecordPid} = ?REQ({whereis, R, #{id => 0}}),
    roundtrip(Config, [Self, Other, Ref, Alias, RecordPid, {Self, Ref}, [Ref, Other],
                       #{pid => Self, ref => Ref}]),
    Other ! stop,
    unalias(Alias).

%% Terms the node keeps without looking inside. Over a connection with the atom cache, the
%% node names and module names in them arrive as cache references.
ports_funs_and_bitstrings(Config) ->
    Port = open_port({spawn, "cat"}, []),
    N = 5,
    Closure = fun(X) -> X + N end,
    roundtrip(Config, [Port, fun lists:map/2, fun erlang:self/0, <<1:3>>, <<255, 7:5>>, Closure,
                       {Port, fun lists:reverse/1}, [<<1:1>>, Port]]),
    port_close(Port).

everything_in_one_record(Config) ->
    R = ?config(res, Config),
    Rec = #{id => 1, bin => <<1, 2, 3>>, int => -(1 bsl 100), float => -0.5, atom => 'ä',
            nil_v => nil, t => true, f => false, list => [1, [2]], improper => [1 | 2],
            str => "string", tuple => {a, {b}}, map => #{<<"k">> => [#{}]}, pid => self(),
            ref => make_ref(), empty_list => [], empty_bin => <<>>, empty_map => #{}},
    ?assertEqual({ok, Rec}, ?REQ({create, R, Rec})),
    ?assertEqual({ok, Rec}, ?REQ({get, R, #{id => 1}})),
    ?assertEqual({ok, [Rec]}, ?REQ({query, R, #{}})).

values_as_primary_keys(Config) ->
    R = ?config(res, Config),
    Keys = [<<"bin-key">>, <<255, 0>>, 1 bsl 64, -(1 bsl 100), 1.5, 'ä', {compound, 1},
            [1, 2], "str", #{k => v}, make_ref(), self(), 1],
    [begin
         Rec = #{id => K, payload => {payload, K}},
         ?assertEqual({K, {ok, Rec}}, {K, ?REQ({create, R, Rec})}),
         ?assertEqual({K, {ok, Rec}}, {K, ?REQ({get, R, #{id => K}})}),
         ?assertMatch({ok, P} when is_pid(P), ?REQ({whereis, R, #{id => K}}))
     end || K <- Keys],
    {ok, All} = ?REQ({query, R, #{}}),
    ?assertEqual(lists:sort(Keys), lists:sort([maps:get(id, X) || X <- All])),
    [?assertEqual(ok, ?REQ({destroy, R, #{id => K}})) || K <- Keys],
    ?assertEqual({ok, []}, ?REQ({query, R, #{}})).

values_through_update_query_aggregate(Config) ->
    R = ?config(res, Config),
    Vals = [<<255, 0>>, -(1 bsl 100), 1 bsl 64, 'ünï', [a | b], "str", {t, [1]},
            #{<<"k">> => {v}}, self(), make_ref(), -2.5, [-3, 7]],
    [begin
         ok = create(Config, R, #{id => I}),
         ?assertEqual({ok, #{id => I, v => V}}, ?REQ({update, R, #{id => I}, #{v => V}})),
         ?assertEqual({ok, [#{id => I, v => V}]}, ?REQ({query, R, #{filter => {eq, v, V}}})),
         ?assertEqual({ok, [#{id => I, v => V}]},
                      ?REQ({query, R, #{filter => {in, v, [V]}}})),
         ?assertEqual({ok, #{f => V, l => [V]}},
                      ?REQ({aggregate, R, #{filter => {eq, id, I}, sort => [{id, asc}]},
                            [{f, first, v, #{}}, {l, list, v, #{}}]}))
     end || {I, V} <- lists:zip(lists:seq(1, length(Vals)), Vals)],
    {ok, #{l := L}} = ?REQ({aggregate, R, #{sort => [{id, asc}]}, [{l, list, v, #{}}]}),
    ?assertEqual(Vals, L).

large_record(Config) ->
    R = ?config(res, Config),
    Rec = maps:from_list([{id, 1} | [{list_to_atom("f" ++ integer_to_list(I)), I}
                                     || I <- lists:seq(1, 500)]]),
    ?assertEqual({ok, Rec}, ?REQ({create, R, Rec})),
    ?assertEqual({ok, Rec}, ?REQ({get, R, #{id => 1}})).
