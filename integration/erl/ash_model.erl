%% A reference model of PROTOCOL.md's query semantics, written with Erlang's own term order and
%% `==`: the suites check the node's answers against it (besides hard-coded expectations).
-module(ash_model).

-export([eval/2, field/2, query/3, sort/3, aggregate/4, random_expr/3]).

%% An absent field reads as nil.
field(F, R) -> maps:get(F, R, nil).

%% eval(Expr, Record) -> boolean()
eval(true, _) -> true;
eval(false, _) -> false;
eval({eq, F, V}, R) -> field(F, R) == V;
eval({neq, F, V}, R) -> field(F, R) /= V;
eval({lt, F, V}, R) -> field(F, R) < V;
eval({lte, F, V}, R) -> field(F, R) =< V;
eval({gt, F, V}, R) -> field(F, R) > V;
eval({gte, F, V}, R) -> field(F, R) >= V;
eval({in, F, Vs}, R) -> X = field(F, R), lists:any(fun(V) -> X == V end, Vs);
eval({is_nil, F}, R) -> field(F, R) =:= nil;
eval({contains, F, Sub}, R) ->
    case field(F, R) of
        B when is_binary(B), Sub =:= <<>> -> true;
        B when is_binary(B) -> binary:match(B, Sub) =/= nomatch;
        _ -> false
    end;
eval({'and', A, B}, R) -> eval(A, R) andalso eval(B, R);
eval({'or', A, B}, R) -> eval(A, R) orelse eval(B, R);
eval({'not', A}, R) -> not eval(A, R).

%% query(Records, PrimaryKey, QueryMap) -> [Record] (select not applied to the pk-less case)
query(Records, PK, Q) ->
    Filter = case maps:get(filter, Q, nil) of nil -> true; E -> E end,
    Matching = [R || R <- Records, eval(Filter, R)],
    Sorted = sort(Matching, PK, maps:get(sort, Q, [])),
    Offset = maps:get(offset, Q, 0),
    AfterOffset = case Offset >= length(Sorted) of
                      true -> [];
                      false -> lists:nthtail(Offset, Sorted)
                  end,
    Limited = case maps:get(limit, Q, nil) of
                  nil -> AfterOffset;
                  L -> lists:sublist(AfterOffset, L)
              end,
    case maps:get(select, Q, nil) of
        nil -> Limited;
        Fields -> [maps:with(Fields ++ PK, R) || R <- Limited]
    end.

%% Sort by the sort fields, then by the primary key ascending (exact order: 1 before 1.0).
sort(Records, PK, Sort) ->
    lists:sort(fun(A, B) -> cmp_records(A, B, PK, Sort) =/= gt end, Records).

cmp_records(A, B, PK, [{F, Dir} | Rest]) ->
    case cmp_dir(Dir, field(F, A), field(F, B)) of
        eq -> cmp_records(A, B, PK, Rest);
        O -> O
    end;
cmp_records(A, B, PK, []) ->
    cmp_pk(A, B, PK).

cmp_pk(_, _, []) -> eq;
cmp_pk(A, B, [F | Rest]) ->
    case cmp_exact(field(F, A), field(F, B)) of
        eq -> cmp_pk(A, B, Rest);
        O -> O
    end.

cmp(A, B) when A < B -> lt;
cmp(A, B) when A > B -> gt;
cmp(_, _) -> eq.

cmp_exact(A, B) ->
    case cmp(A, B) of
        eq when is_integer(A), is_float(B) -> lt;
        eq when is_float(A), is_integer(B) -> gt;
        O -> O
    end.

cmp_dir(asc, A, B) -> cmp(A, B);
cmp_dir(desc, A, B) -> cmp(B, A);
cmp_dir(Dir, A, B) ->
    NilsFirst = lists:member(Dir, [asc_nils_first, desc_nils_first]),
    Asc = lists:member(Dir, [asc_nils_first, asc_nils_last]),
    case {A =:= nil, B =:= nil} of
        {true, true} -> eq;
        {true, false} when NilsFirst -> lt;
        {true, false} -> gt;
        {false, true} when NilsFirst -> gt;
        {false, true} -> lt;
        {false, false} when Asc -> cmp(A, B);
        {false, false} -> cmp(B, A)
    end.

%% aggregate(Records, PK, Query, {Name, Kind, Field, Opts}) -> Value
aggregate(Records, PK, Query, {_Name, Kind, Field, Opts}) ->
    Rs = query(Records, PK, maps:remove(select, Query)),
    Uniq = maps:get(uniq, Opts, false),
    IncludeNil = maps:get(include_nil, Opts, false),
    Values = case Field of
                 nil -> Rs;
                 _ -> [field(Field, R) || R <- Rs]
             end,
    NonNil = [V || V <- Values, V =/= nil],
    Value = case Kind of
                count when Field =:= nil -> length(Rs);
                count when Uniq -> length(uniq(NonNil));
                count -> length(NonNil);
                exists -> Rs =/= [];
                sum when NonNil =:= [] -> nil;
                sum -> lists:foldl(fun(V, Acc) -> Acc + V end, 0, NonNil);
                avg when NonNil =:= [] -> nil;
                avg -> lists:foldl(fun(V, Acc) -> Acc + V end, 0, NonNil) / length(NonNil);
                min when NonNil =:= [] -> nil;
                min -> lists:foldl(fun(V, Acc) -> case V < Acc of true -> V; false -> Acc end end,
                                   hd(NonNil), NonNil);
                max when NonNil =:= [] -> nil;
                max -> lists:foldl(fun(V, Acc) -> case V > Acc of true -> V; false -> Acc end end,
                                   hd(NonNil), NonNil);
                first when IncludeNil -> case Values of [] -> nil; [V | _] -> V end;
                first -> case NonNil of [] -> nil; [V | _] -> V end;
                list when IncludeNil, Uniq -> uniq(Values);
                list when IncludeNil -> Values;
                list when Uniq -> uniq(NonNil);
                list -> NonNil
            end,
    %% PROTOCOL.md: "empty" means no non-nil value is left (no record at all for a nil Field)
    Empty = case Field of
                nil -> Rs =:= [];
                _ -> NonNil =:= []
            end,
    case {Empty, maps:find(default, Opts)} of
        {true, {ok, D}} -> D;
        _ -> Value
    end.

%% Distinct values (exact), keeping the first occurrence's position.
uniq(Vs) ->
    {Out, _} = lists:foldl(fun(V, {Acc, Seen}) ->
                                   case maps:is_key(V, Seen) of
                                       true -> {Acc, Seen};
                                       false -> {[V | Acc], Seen#{V => true}}
                                   end
                           end, {[], #{}}, Vs),
    lists:reverse(Out).

%% A random filter expression over Fields and Values, at most Depth levels deep.
random_expr(Fields, Values, Depth) ->
    Pick = fun(L) -> lists:nth(rand:uniform(length(L)), L) end,
    Leaf = fun() ->
                   case rand:uniform(9) of
                       1 -> {is_nil, Pick(Fields)};
                       2 -> {in, Pick(Fields), [Pick(Values) || _ <- lists:seq(1, rand:uniform(3))]};
                       3 -> Pick([true, false]);
                       _ -> {Pick([eq, neq, lt, lte, gt, gte]), Pick(Fields), Pick(Values)}
                   end
           end,
    case Depth =< 0 orelse rand:uniform(3) =:= 1 of
        true -> Leaf();
        false ->
            case rand:uniform(3) of
                1 -> {'not', random_expr(Fields, Values, Depth - 1)};
                2 -> {'and', random_expr(Fields, Values, Depth - 1),
                      random_expr(Fields, Values, Depth - 1)};
                3 -> {'or', random_expr(Fields, Values, Depth - 1),
                      random_expr(Fields, Values, Depth - 1)}
            end
    end.
