defmodule AshGenServer.Filter do
  @moduledoc """
  Translates Ash filters and sorts into the node's filter expressions and sort specs
  (PROTOCOL.md "Filter expressions"), deciding what the node can evaluate exactly.

  ## How a filter is split

  Ash evaluates filters with three-valued logic: a comparison with a `nil` side is `nil`,
  `nil and x` is `nil`, `false and x` is `false`, `nil or x` is `x` when `x` is true or false
  and `nil` otherwise, `not nil` is `nil`; only records whose filter is *true* match. The node
  has two-valued logic over Erlang terms, where `nil` is just an atom.

  So every Ash sub-expression `e` is translated into two node expressions, `T(e)` (the records
  where `e` is true) and `F(e)` (where it is false), and a flag saying whether both are exact:

      a OP v        T = not is_nil(a) and a OP v      F = not is_nil(a) and not (a OP v)
      e1 and e2     T = T1 and T2                     F = F1 or (T1 and F2)
      e1 or e2      T = T1 or T2                      F = not T1 and F2
      not e         T = F(e)                          F = T(e)

  A sub-expression the node cannot evaluate exactly (a calculation, an aggregate, a relationship
  path, a comparison on a type the node does not order like Ash — a map, an array, an embedded
  or custom type —, a function...) gets `T = F = true` and is not
  exact. Then `T` and `F` are *supersets* of the true and false sets (every rule above is
  monotonic, except `not T1`, which is only used when `e1` is exact), so `T(filter)` can always
  be sent to the node to narrow the records, and when the whole filter is exact it is the whole
  answer; otherwise Ash re-checks the full filter on the narrowed records
  (`Ash.Filter.Runtime`).

  The node evaluates a comparison only on attributes whose type `AshGenServer.Values.pushdown/1`
  says is `:order`, against a literal of the stored kind.
  """

  alias Ash.Query.{BooleanExpression, Not, Ref}
  alias Ash.Query.Function.Contains

  alias Ash.Query.Operator.{
    Eq,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNil,
    LessThan,
    LessThanOrEqual,
    NotEq
  }

  alias AshGenServer.{Results, Values}

  @type node_expr :: term

  @typedoc "`exact?` is true when `expr` alone selects exactly the records matching the filter."
  @type plan :: %{expr: node_expr, exact?: boolean}

  @comparisons %{
    Eq => :eq,
    NotEq => :neq,
    LessThan => :lt,
    LessThanOrEqual => :lte,
    GreaterThan => :gt,
    GreaterThanOrEqual => :gte
  }

  @flipped %{eq: :eq, neq: :neq, lt: :gt, lte: :gte, gt: :lt, gte: :lte}

  @doc """
  Translates an Ash filter (an `%Ash.Filter{}`, a bare expression, or `nil`) for `resource`.
  `expr` is `true` when nothing can be pushed down.
  """
  @spec translate(Ash.Filter.t() | term | nil, Ash.Resource.t()) :: plan
  def translate(nil, _resource), do: %{expr: true, exact?: true}

  def translate(filter, resource) do
    {t, _f, exact?} = tf(filter, resource)
    %{expr: t, exact?: exact?}
  end

  @doc """
  True when a changeset's or query's `filter` selects everything (`nil`, `true`, or an
  `%Ash.Filter{}` whose expression is one of them), so no condition needs sending.
  """
  @spec no_filter?(Ash.Filter.t() | term | nil) :: boolean
  def no_filter?(nil), do: true
  def no_filter?(true), do: true
  def no_filter?(%Ash.Filter{expression: expression}) when expression in [nil, true], do: true
  def no_filter?(_), do: false

  @doc """
  The expression to send in a request map: `nil` instead of `true` (the node's default).
  """
  @spec to_request(node_expr) :: node_expr | nil
  def to_request(true), do: nil
  def to_request(expr), do: expr

  @doc """
  If `expr` is exactly equality on every primary-key field (and nothing else; `in` with one
  value counts as equality), the primary key as a map of stored values, so the read can be a
  single `get`.
  """
  @spec primary_key_lookup(node_expr, [atom]) :: {:ok, map} | :error
  def primary_key_lookup({:eq, field, value}, [field]), do: {:ok, %{field => value}}
  def primary_key_lookup({:in, field, [value]}, [field]), do: {:ok, %{field => value}}

  def primary_key_lookup(expr, primary_key) do
    conjuncts = conjuncts(expr)

    pairs =
      Enum.flat_map(conjuncts, fn
        {:eq, field, value} -> [{field, value}]
        {:in, field, [value]} -> [{field, value}]
        _ -> []
      end)

    pk = Map.new(pairs)

    if length(pairs) == length(conjuncts) and map_size(pk) == length(pairs) and
         Enum.sort(Map.keys(pk)) == Enum.sort(primary_key) do
      {:ok, pk}
    else
      :error
    end
  end

  defp conjuncts({:and, left, right}), do: conjuncts(left) ++ conjuncts(right)
  defp conjuncts(other), do: [other]

  @doc """
  Translates an Ash sort into the node's `[{Field, Dir}]`, or `:error` if any part of it must be
  sorted by Ash (calculations, aggregates, types the node does not order like Ash).

  Ash's `:asc` puts nils last and `:desc` puts them first; the node gets the explicit direction.
  """
  @spec sort(Ash.Sort.t() | nil, Ash.Resource.t()) :: {:ok, list} | :error
  def sort(nil, _resource), do: {:ok, []}

  def sort(sort, resource) do
    Results.map_ok(sort, fn {field, dir} ->
      with name when is_atom(name) <- sort_field_name(field),
           %{} = attribute <- Ash.Resource.Info.attribute(resource, name),
           :order <- Values.pushdown(attribute.type),
           {:ok, dir} <- sort_dir(dir) do
        {:ok, {name, dir}}
      else
        _ -> :error
      end
    end)
  end

  defp sort_field_name(name) when is_atom(name), do: name
  defp sort_field_name(%Ash.Resource.Attribute{name: name}), do: name
  defp sort_field_name(_), do: nil

  defp sort_dir(:asc), do: {:ok, :asc_nils_last}
  defp sort_dir(:desc), do: {:ok, :desc_nils_first}

  defp sort_dir(dir)
       when dir in [:asc_nils_first, :asc_nils_last, :desc_nils_first, :desc_nils_last],
       do: {:ok, dir}

  defp sort_dir(_), do: :error

  # -- T/F translation ----------------------------------------------------------------------

  @unknown {true, true, false}

  defp tf(%Ash.Filter{expression: expression}, resource), do: tf(expression, resource)
  defp tf(nil, _resource), do: {false, false, true}
  defp tf(true, _resource), do: {true, false, true}
  defp tf(false, _resource), do: {false, true, true}

  defp tf(%BooleanExpression{op: :and, left: left, right: right}, resource) do
    {t1, f1, e1} = tf(left, resource)
    {t2, f2, e2} = tf(right, resource)
    {and_(t1, t2), or_(f1, and_(t1, f2)), e1 and e2}
  end

  defp tf(%BooleanExpression{op: :or, left: left, right: right}, resource) do
    {t1, f1, e1} = tf(left, resource)
    {t2, f2, e2} = tf(right, resource)
    _ = f1
    f = if e1, do: and_(not_(t1), f2), else: f2
    {or_(t1, t2), f, e1 and e2}
  end

  defp tf(%Not{expression: expression}, resource) do
    {t, f, exact?} = tf(expression, resource)
    {f, t, exact?}
  end

  defp tf(%mod{left: left, right: right} = comparison, resource)
       when is_map_key(@comparisons, mod) do
    op = Map.fetch!(@comparisons, mod)

    case orient(left, right, resource) do
      {:ok, attribute, value, :normal} -> comparison(op, attribute, value)
      {:ok, attribute, value, :flipped} -> comparison(Map.fetch!(@flipped, op), attribute, value)
      :error -> value_expression(comparison, resource)
    end
  end

  defp tf(%In{left: left, right: right}, resource) do
    with {:ok, attribute} <- field(left, resource),
         false <- Ash.Expr.expr?(right),
         true <- is_list(right) or is_struct(right, MapSet),
         {:ok, values} <- dump_all(attribute, right) do
      f = attribute.name
      t = if values == [], do: false, else: {:in, f, values}
      {t, and_(not_nil(f), not_(t)), true}
    else
      _ -> @unknown
    end
  end

  defp tf(%IsNil{left: left, right: right}, resource) do
    case {field(left, resource), right} do
      {{:ok, _attribute}, nil} -> {false, false, true}
      {{:ok, attribute}, true} -> {{:is_nil, attribute.name}, not_nil(attribute.name), true}
      {{:ok, attribute}, false} -> {not_nil(attribute.name), {:is_nil, attribute.name}, true}
      _ -> @unknown
    end
  end

  defp tf(%Contains{arguments: [left, right]}, resource) do
    with {:ok, %{type: Ash.Type.String} = attribute} <- field(left, resource),
         true <- is_binary(right),
         {:ok, value} <- Values.dump_comparable(attribute, right) do
      guarded(attribute.name, {:contains, attribute.name, value})
    else
      _ -> unknown_or_nil(right)
    end
  end

  defp tf(%Ref{} = ref, resource) do
    case field(ref, resource) do
      {:ok, %{type: Ash.Type.Boolean, name: name}} ->
        {{:eq, name, true}, {:eq, name, false}, true}

      _ ->
        @unknown
    end
  end

  defp tf(other, resource), do: value_expression(other, resource)

  # What the node evaluates as a value expression (`{expr, VExpr}`: arithmetic, comparisons
  # between fields, `if`, `upsert_conflict/1`...; see `AshGenServer.Expr`): true where it is
  # true, false where its negation is true (nil is neither, as in Ash).
  # An expression that can raise (`error(...)`) is left to Ash: the node counts a filter
  # expression that fails as not holding (the record is left out), where Ash fails the read
  # (`authorize_read_with :error` filters are `if allowed, do: true, else: error(Forbidden)`).
  defp value_expression(expr, resource) do
    case AshGenServer.Expr.predicate(expr, resource) do
      {:ok, {:value, true}} ->
        {true, false, true}

      {:ok, {:value, false}} ->
        {false, true, true}

      {:ok, {:value, nil}} ->
        {false, false, true}

      {:ok, vexpr} ->
        if raises?(vexpr), do: @unknown, else: {{:expr, vexpr}, {:expr, {:not, vexpr}}, true}

      :error ->
        @unknown
    end
  end

  defp raises?({:error, _}), do: true
  defp raises?({:value, _}), do: false
  defp raises?(tuple) when is_tuple(tuple), do: tuple |> Tuple.to_list() |> Enum.any?(&raises?/1)
  defp raises?(list) when is_list(list), do: Enum.any?(list, &raises?/1)
  defp raises?(_), do: false

  defp unknown_or_nil(nil), do: {false, false, true}
  defp unknown_or_nil(_), do: @unknown

  defp comparison(_op, _attribute, nil), do: {false, false, true}

  defp comparison(op, attribute, value) do
    case Values.dump_comparable(attribute, value) do
      {:ok, native} -> guarded(attribute.name, {op, attribute.name, native})
      :error -> @unknown
    end
  end

  # A comparison on a non-nil stored value: true where it holds, false where it does not.
  defp guarded(field, {:eq, _, _} = cmp), do: {cmp, and_(not_nil(field), not_(cmp)), true}
  defp guarded(field, cmp), do: {and_(not_nil(field), cmp), and_(not_nil(field), not_(cmp)), true}

  # `attribute OP literal` (`:normal`) or `literal OP attribute` (`:flipped`); each side's
  # attribute is looked up once.
  defp orient(left, right, resource) do
    with :error <- oriented(field(left, resource), right, :normal) do
      oriented(field(right, resource), left, :flipped)
    end
  end

  defp oriented({:ok, attribute}, value, side) do
    if literal?(value), do: {:ok, attribute, value, side}, else: :error
  end

  defp oriented(:error, _value, _side), do: :error

  defp literal?(value), do: not Ash.Expr.expr?(value)

  defp dump_all(attribute, values) do
    values
    |> Enum.reject(&is_nil/1)
    |> Results.map_ok(&Values.dump_comparable(attribute, &1))
    |> case do
      {:ok, values} -> {:ok, Enum.uniq(values)}
      :error -> :error
    end
  end

  # A reference the node can evaluate: an attribute of this very resource, with no
  # relationship path.
  defp field(%Ref{relationship_path: [], attribute: attribute} = ref, resource) do
    name =
      case attribute do
        %Ash.Resource.Attribute{name: name} -> name
        name when is_atom(name) -> name
        _ -> nil
      end

    with false <- Map.get(ref, :combinations?, false),
         true <- ref.resource in [nil, resource],
         true <- is_atom(name) and not is_nil(name),
         %Ash.Resource.Attribute{} = attribute <- Ash.Resource.Info.attribute(resource, name) do
      {:ok, attribute}
    else
      _ -> :error
    end
  end

  defp field(_other, _resource), do: :error

  defp not_nil(field), do: {:not, {:is_nil, field}}

  @doc "The node expression `{and, X, Y}`, simplified when either side is `true` or `false`."
  @spec and_(node_expr, node_expr) :: node_expr
  def and_(true, x), do: x
  def and_(x, true), do: x
  def and_(false, _), do: false
  def and_(_, false), do: false
  def and_(x, y), do: {:and, x, y}

  defp or_(true, _), do: true
  defp or_(_, true), do: true
  defp or_(false, x), do: x
  defp or_(x, false), do: x
  defp or_(x, y), do: {:or, x, y}

  defp not_(true), do: false
  defp not_(false), do: true
  defp not_({:not, x}), do: x
  defp not_(x), do: {:not, x}
end
