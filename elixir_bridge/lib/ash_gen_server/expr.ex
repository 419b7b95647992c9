defmodule AshGenServer.Expr do
  @moduledoc """
  Translates Ash expressions into the node's value expressions (PROTOCOL.md "Value
  expressions"), for atomics (`atomic_update`, `atomic_set`, upsert atomics), upsert conditions
  on incoming values and filters the node evaluates as `{expr, VExpr}`.

  Only what the node evaluates exactly as Ash does is translated; anything else is `:error`, and
  the caller falls back (`AshGenServer.Atomics`' compare-and-set loop, or Ash at run time):

  - literals of a kind stored as themselves (integers, floats, strings, booleans, `nil`);
  - references to attributes of the resource whose stored values compare like Ash's
    (`AshGenServer.Values.pushdown/1`), and `upsert_conflict(:field)` (`{incoming, Field}`);
  - `+ - *` on numbers, `/` on numbers (a float, as Ash divides integers and floats),
    `<>` on strings, `== != < <= > >=`, `and`/`or`/`not`, `is_nil`, `if` (and `cond`, which
    Ash builds from nested `if`s), `error(Exception, vars)`;
  - `type(expr, t)` casts that change nothing on the node: an expression of integer, float,
    string or boolean type cast to that same type.

  An `error(Exception, vars)` is sent as `{error, {Exception, Vars}}`; the node's
  `{expr_error, {Exception, Vars}}` is turned back into the exception by `to_exception/1`.
  """

  alias Ash.Query.{BooleanExpression, Not, Ref, UpsertConflict}
  alias Ash.Query.Function.{Error, If, IsNil, Type}
  alias Ash.Query.Operator.Basic.{Concat, Div, Minus, Plus, Times}

  alias Ash.Query.Operator.{
    Eq,
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
    NotEq
  }

  alias AshGenServer.Values

  @comparisons %{
    Eq => :eq,
    NotEq => :neq,
    LessThan => :lt,
    LessThanOrEqual => :lte,
    GreaterThan => :gt,
    GreaterThanOrEqual => :gte
  }

  @arithmetic %{Plus => :+, Minus => :-, Times => :*, Div => :/}

  @plain_types [Ash.Type.Integer, Ash.Type.Float, Ash.Type.String, Ash.Type.Boolean]

  @typedoc "The kind of value an expression gives, as far as it is known."
  @type kind :: :number | :string | :boolean | :any

  @doc """
  Translates `expr` (an Ash expression over `resource`) into a node value expression:
  `{:ok, vexpr}` or `:error` when the node cannot evaluate it exactly.
  """
  @spec translate(term, Ash.Resource.t()) :: {:ok, term} | :error
  def translate(expr, resource) do
    case vexpr(expr, resource, 0) do
      {:ok, vexpr, _kind} -> {:ok, vexpr}
      :error -> :error
    end
  end

  @doc "Like `translate/2`, for an expression that must give a boolean (or nil): a filter."
  @spec predicate(term, Ash.Resource.t()) :: {:ok, term} | :error
  def predicate(expr, resource) do
    case vexpr(expr, resource, 0) do
      {:ok, vexpr, kind} when kind in [:boolean, nil] -> {:ok, vexpr}
      _ -> :error
    end
  end

  @doc """
  Translates the atomics of a changeset (`[{field, expr}]`) for an attribute each: every value
  must land in the stored form of its attribute, so only attributes stored as themselves
  (integers, floats, strings, booleans) with an expression of the matching kind are sent.
  `{:ok, [{field, vexpr}]}` or `:error` when any one cannot be.
  """
  @spec atomics([{atom, term}], Ash.Resource.t()) :: {:ok, [{atom, term}]} | :error
  def atomics(atomics, resource) do
    AshGenServer.Results.map_ok(atomics, fn {field, expr} ->
      with %{type: type} <- Ash.Resource.Info.attribute(resource, field),
           true <- type in @plain_types,
           {:ok, vexpr, kind} <- vexpr(expr, resource, 0),
           true <- fits?(type, kind) do
        {:ok, {field, vexpr}}
      else
        _ -> :error
      end
    end)
  end

  defp fits?(_type, nil), do: true
  defp fits?(Ash.Type.Integer, kind), do: kind == :integer
  defp fits?(Ash.Type.Float, kind), do: kind in [:float, :number, :integer]
  defp fits?(Ash.Type.String, kind), do: kind == :string
  defp fits?(Ash.Type.Boolean, kind), do: kind == :boolean

  @doc "The Ash exception for a node `{expr_error, Term}`."
  @spec to_exception(term) :: Exception.t()
  def to_exception({module, vars}) when is_atom(module) and is_map(vars) do
    if Code.ensure_loaded?(module) and function_exported?(module, :exception, 1) do
      module.exception(Keyword.new(vars))
    else
      Ash.Error.Unknown.UnknownError.exception(error: inspect({module, vars}))
    end
  end

  def to_exception({:arithmetic, op, left, right}) do
    Ash.Error.Unknown.UnknownError.exception(
      error: "arithmetic #{inspect(op)} on #{inspect(left)} and #{inspect(right)}"
    )
  end

  def to_exception(other),
    do: Ash.Error.Unknown.UnknownError.exception(error: "expression failed: #{inspect(other)}")

  # -- translation: {:ok, vexpr, kind} | :error ------------------------------------------------

  @max_depth 200

  defp vexpr(_expr, _resource, depth) when depth > @max_depth, do: :error
  defp vexpr(nil, _resource, _depth), do: {:ok, {:value, nil}, nil}

  defp vexpr(value, _resource, _depth) when is_boolean(value),
    do: {:ok, {:value, value}, :boolean}

  defp vexpr(value, _resource, _depth) when is_integer(value),
    do: {:ok, {:value, value}, :integer}

  defp vexpr(value, _resource, _depth) when is_float(value), do: {:ok, {:value, value}, :float}
  defp vexpr(value, _resource, _depth) when is_binary(value), do: {:ok, {:value, value}, :string}

  defp vexpr(%Ref{} = ref, resource, _depth) do
    case attribute(ref, resource) do
      {:ok, attribute} -> {:ok, {:ref, attribute.name}, kind_of(attribute.type)}
      :error -> :error
    end
  end

  defp vexpr(%UpsertConflict{attribute: name}, resource, _depth) when is_atom(name) do
    case Ash.Resource.Info.attribute(resource, name) do
      %{type: type} = attribute ->
        if Values.pushdown(type) == :order,
          do: {:ok, {:incoming, attribute.name}, kind_of(type)},
          else: :error

      _ ->
        :error
    end
  end

  defp vexpr(%mod{left: left, right: right}, resource, depth)
       when is_map_key(@arithmetic, mod) do
    with {:ok, l, lk} <- vexpr(left, resource, depth + 1),
         {:ok, r, rk} <- vexpr(right, resource, depth + 1),
         true <- number?(lk) and number?(rk) do
      kind =
        cond do
          mod == Div -> :float
          lk == :integer and rk == :integer -> :integer
          lk == :float or rk == :float -> :float
          true -> :number
        end

      {:ok, {Map.fetch!(@arithmetic, mod), l, r}, kind}
    else
      _ -> :error
    end
  end

  defp vexpr(%Concat{left: left, right: right}, resource, depth) do
    with {:ok, l, lk} <- vexpr(left, resource, depth + 1),
         {:ok, r, rk} <- vexpr(right, resource, depth + 1),
         true <- lk in [:string, nil] and rk in [:string, nil] do
      {:ok, {:concat, flatten_concat(l) ++ flatten_concat(r)}, :string}
    else
      _ -> :error
    end
  end

  defp vexpr(%mod{left: left, right: right}, resource, depth)
       when is_map_key(@comparisons, mod) do
    with {:ok, l, lk} <- vexpr(left, resource, depth + 1),
         {:ok, r, rk} <- vexpr(right, resource, depth + 1),
         true <- comparable?(lk, rk) do
      {:ok, {Map.fetch!(@comparisons, mod), l, r}, :boolean}
    else
      _ -> :error
    end
  end

  defp vexpr(%BooleanExpression{op: op, left: left, right: right}, resource, depth)
       when op in [:and, :or] do
    with {:ok, l, lk} <- vexpr(left, resource, depth + 1),
         {:ok, r, rk} <- vexpr(right, resource, depth + 1),
         true <- lk in [:boolean, nil] and rk in [:boolean, nil] do
      {:ok, {op, l, r}, :boolean}
    else
      _ -> :error
    end
  end

  defp vexpr(%Not{expression: expression}, resource, depth) do
    case vexpr(expression, resource, depth + 1) do
      {:ok, e, kind} when kind in [:boolean, nil] -> {:ok, {:not, e}, :boolean}
      _ -> :error
    end
  end

  defp vexpr(%Ash.Query.Operator.IsNil{left: left, right: right}, resource, depth)
       when is_boolean(right) do
    case vexpr(left, resource, depth + 1) do
      {:ok, e, _kind} ->
        if right, do: {:ok, {:is_nil, e}, :boolean}, else: {:ok, {:not, {:is_nil, e}}, :boolean}

      :error ->
        :error
    end
  end

  defp vexpr(%IsNil{arguments: [arg]}, resource, depth) do
    case vexpr(arg, resource, depth + 1) do
      {:ok, e, _kind} -> {:ok, {:is_nil, e}, :boolean}
      :error -> :error
    end
  end

  defp vexpr(%If{arguments: [condition, then, otherwise]}, resource, depth) do
    with {:ok, c, ck} <- vexpr(condition, resource, depth + 1),
         true <- ck in [:boolean, nil],
         {:ok, t, tk} <- vexpr(then, resource, depth + 1),
         {:ok, e, ek} <- vexpr(otherwise, resource, depth + 1),
         {:ok, kind} <- join_kind(tk, ek) do
      {:ok, {:if, c, t, e}, kind}
    else
      _ -> :error
    end
  end

  defp vexpr(%Error{arguments: [exception, input]}, _resource, _depth)
       when is_atom(exception) do
    case literal_map(input) do
      {:ok, vars} -> {:ok, {:error, {exception, vars}}, nil}
      :error -> :error
    end
  end

  defp vexpr(%Type{arguments: [inner, type | rest]}, resource, depth) do
    type = Ash.Type.get_type(type)
    constraints = List.first(rest) || []

    cond do
      type not in @plain_types ->
        :error

      not Ash.Expr.expr?(inner) ->
        # a literal: cast now, as Ash would, then send the value when it is stored as itself
        case Ash.Type.cast_input(type, inner, constraints) do
          {:ok, value} -> vexpr(value, resource, depth + 1)
          _ -> :error
        end

      true ->
        case vexpr(inner, resource, depth + 1) do
          {:ok, e, kind} -> if fits?(type, kind), do: {:ok, e, kind_of(type)}, else: :error
          :error -> :error
        end
    end
  end

  defp vexpr(_other, _resource, _depth), do: :error

  defp join_kind(nil, kind), do: {:ok, kind}
  defp join_kind(kind, nil), do: {:ok, kind}
  defp join_kind(kind, kind), do: {:ok, kind}

  defp join_kind(a, b) do
    if number?(a) and number?(b), do: {:ok, :number}, else: :error
  end

  defp number?(kind), do: kind in [:integer, :float, :number, nil]

  # The node compares like Ash within one kind: numbers with numbers (1 == 1.0 on both),
  # strings with strings, booleans with booleans, and anything with nil (giving nil).
  defp comparable?(nil, _), do: true
  defp comparable?(_, nil), do: true
  defp comparable?(a, b), do: (number?(a) and number?(b)) or (a == b and a != :any)

  defp flatten_concat({:concat, parts}), do: parts
  defp flatten_concat(other), do: [other]

  defp kind_of(Ash.Type.Integer), do: :integer
  defp kind_of(Ash.Type.Float), do: :float
  defp kind_of(Ash.Type.String), do: :string
  defp kind_of(Ash.Type.Boolean), do: :boolean
  defp kind_of(_), do: :any

  defp literal_map(input) when is_map(input) or is_list(input) do
    pairs = Enum.to_list(input)

    if Enum.all?(pairs, fn {k, v} -> is_atom(k) and not Ash.Expr.expr?(v) end),
      do: {:ok, Map.new(pairs)},
      else: :error
  end

  defp literal_map(_), do: :error

  # An attribute of this very resource the node compares like Ash (no relationship path).
  defp attribute(%Ref{relationship_path: [], attribute: attribute} = ref, resource) do
    name =
      case attribute do
        %Ash.Resource.Attribute{name: name} -> name
        name when is_atom(name) -> name
        _ -> nil
      end

    with false <- Map.get(ref, :combinations?, false),
         true <- ref.resource in [nil, resource],
         true <- is_atom(name) and not is_nil(name),
         %Ash.Resource.Attribute{type: type} = attribute <-
           Ash.Resource.Info.attribute(resource, name),
         :order <- Values.pushdown(type) do
      {:ok, attribute}
    else
      _ -> :error
    end
  end

  defp attribute(_ref, _resource), do: :error
end
