%% Prometheus metrics (`--metrics-addr`): scraped over real HTTP while requests run, the
%% counters move exactly as the requests did, and the gauges follow the node's state.
-module(ash_metrics_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() -> [counters_follow_requests, gauges_follow_state].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(inets),
    Port = free_port(),
    Addr = "127.0.0.1:" ++ integer_to_list(Port),
    Config1 = ash_node:start_suite(Config, #{tag => "metrics", args => ["--metrics-addr", Addr]}),
    [{metrics_url, "http://" ++ Addr ++ "/metrics"} | Config1].

end_per_suite(Config) ->
    ash_node:stop_suite(Config).

free_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(S),
    ok = gen_tcp:close(S),
    Port.

%% The metrics as #{Line => Value} for sample lines (name with labels => number).
scrape(Config) ->
    {ok, {{_, 200, _}, _, Body}} = httpc:request(get, {?config(metrics_url, Config), []},
                                                 [{timeout, 5000}], []),
    maps:from_list(
      [begin
           [Key, Value] = string:split(Line, " ", trailing),
           {Key, list_to_float_or_int(Value)}
       end || Line <- string:split(Body, "\n", all), Line =/= "", hd(Line) =/= $#]).

list_to_float_or_int(S) ->
    case string:to_float(S) of
        {F, ""} -> F;
        _ -> list_to_integer(S)
    end.

value(Metrics, Key) -> maps:get(Key, Metrics, 0).

counters_follow_requests(Config) ->
    R = ash_node:uniq_res(metrics_res),
    Req = fun(Q) -> ash_node:req(Config, Q) end,
    ok = Req({define, R, #{primary_key => [id]}}),
    Before = scrape(Config),
    [{ok, _} = Req({create, R, #{id => I}}) || I <- lists:seq(1, 7)],
    [{ok, _} = Req({get, R, #{id => I}}) || I <- lists:seq(1, 5)],
    [{error, not_found} = Req({get, R, #{id => I}}) || I <- lists:seq(100, 102)],
    After = scrape(Config),
    Delta = fun(K) -> value(After, K) - value(Before, K) end,
    ?assertEqual(7, Delta("ash_gen_server_requests_total{kind=\"create\",result=\"ok\"}")),
    ?assertEqual(5, Delta("ash_gen_server_requests_total{kind=\"get\",result=\"ok\"}")),
    ?assertEqual(3, Delta("ash_gen_server_requests_total{kind=\"get\",result=\"error\"}")),
    ?assertEqual(8, Delta("ash_gen_server_request_duration_seconds_count{kind=\"get\"}")).

gauges_follow_state(Config) ->
    R = ash_node:uniq_res(metrics_gauge),
    Req = fun(Q) -> ash_node:req(Config, Q) end,
    ok = Req({define, R, #{primary_key => [id]}}),
    [{ok, _} = Req({create, R, #{id => I}}) || I <- lists:seq(1, 4)],
    {ok, _} = Req({whereis, R, #{id => 1}}),
    Key = "ash_gen_server_records{resource=\"" ++ atom_to_list(R) ++ "\"}",
    %% Gauges are sampled once a second.
    true = ash_node:poll(fun() ->
                                 M = scrape(Config),
                                 value(M, Key) == 4 andalso
                                     value(M, "ash_gen_server_record_pids") >= 1 andalso
                                     value(M, "ash_gen_server_connections") >= 1
                         end, 10000, 200),
    {ok, 4} = Req({clear, R}),
    true = ash_node:poll(fun() -> value(scrape(Config), Key) == 0 end, 10000, 200).
