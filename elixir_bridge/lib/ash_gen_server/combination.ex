defmodule AshGenServer.Combination do
  @moduledoc """
  Combination queries (`Ash.Query.combination_of/2`: `base`, `union`, `union_all`,
  `intersect`, `except`) for `AshGenServer.DataLayer`.

  Ash builds one data layer query per combination (its filter, sort, offset, limit and
  calculations); each runs on the node like any read (`AshGenServer.Query.run/1`), and the
  results are combined here, left to right, with SQL's semantics:

  - `base`: the first combination's records;
  - `union_all`: the records so far followed by the combination's;
  - `union`: the same, without duplicates;
  - `intersect`: the records so far that the combination also returned, without duplicates;
  - `except`: the records so far that the combination did not return, without duplicates.

  Two records are the same when they agree on the combination's fields: those the first
  combination selects (the resource's default fields without a `select`) and the names of its
  calculations. Values of types without simple equality are compared with `Ash.Type.equal?/3`.
  A combination calculation named like an attribute replaces the attribute's value.

  The outer query (`filter`, `sort`, `distinct`, `offset`, `limit`, calculations, aggregates)
  then applies to the combined records in Elixir (`AshGenServer.Query`); `prepare/1` makes its
  references to combination fields (`^combinations(:name)`) resolvable there.
  """

  @typedoc "A combination as Ash hands it to `combination_of/3`: its type and its query."
  @type combination ::
          {:base | :union | :union_all | :intersect | :except, AshGenServer.Query.t()}

  @doc """
  Runs every combination with `run` (tenant of the outer query) and combines the results.
  """
  @spec records(AshGenServer.Query.t(), (AshGenServer.Query.t() -> {:ok, list} | {:error, term})) ::
          {:ok, [Ash.Resource.record()]} | {:error, term}
  def records(%{combination_of: [{_, first} | _] = combinations} = query, run) do
    {simple, other} = fields(query.resource, first)
    overwriting = overwriting(query.resource, combinations)

    Enum.reduce_while(combinations, {:ok, []}, fn {type, combination}, {:ok, acc} ->
      case run.(%{combination | tenant: query.tenant}) do
        {:ok, results} ->
          results = Enum.map(results, &overwrite(&1, overwriting))
          {:cont, {:ok, combine(type, acc, results, {simple, other})}}

        {:error, error} ->
          {:halt, {:error, error}}
      end
    end)
  end

  @doc """
  Whether the combined records may hold duplicates (a `union_all`): Ash's runtime sort must
  then load sort fields record by record (`maybe_not_distinct?`).
  """
  @spec maybe_not_distinct?(AshGenServer.Query.t()) :: boolean
  def maybe_not_distinct?(query),
    do: Enum.any?(query.combination_of, &(elem(&1, 0) == :union_all))

  @doc """
  The outer query with its references to combination fields (`^combinations(:name)`) ready
  for Ash's runtime filter and sort, which read them from the combined records: marked as
  loaded (as `Ash.DataLayer.Ets` does), and resolved to the combination field (its type from
  the first combination's calculation, else the attribute) where Ash left only the name (a
  filter added with `Ash.Query.filter/2` is hydrated without the combinations).
  """
  @spec prepare(AshGenServer.Query.t()) :: AshGenServer.Query.t()
  def prepare(%{combination_of: [{_, first} | _]} = query) do
    load = &load_refs(&1, query.resource, first)

    %{
      query
      | filter: load.(query.filter),
        sort: Enum.map(query.sort || [], &load_sort_refs(&1, load)),
        distinct: Enum.map(query.distinct || [], &load_sort_refs(&1, load)),
        distinct_sort:
          query.distinct_sort && Enum.map(query.distinct_sort, &load_sort_refs(&1, load))
    }
  end

  defp load_sort_refs(
         {%Ash.Query.Calculation{module: Ash.Resource.Calculation.Expression, opts: opts} = calc,
          order},
         load
       ),
       do: {%{calc | opts: Keyword.update!(opts, :expr, load)}, order}

  defp load_sort_refs(other, _load), do: other

  defp load_refs(nil, _resource, _first), do: nil

  defp load_refs(expression, resource, first) do
    Ash.Filter.map(expression, fn
      %Ash.Query.Ref{combinations?: true, attribute: name} = ref when is_atom(name) ->
        %{ref | attribute: combination_attr(resource, first, name)}

      %Ash.Query.Ref{combinations?: true, attribute: %{load?: false} = attribute} = ref ->
        %{ref | attribute: %{attribute | load?: true}}

      other ->
        other
    end)
  end

  defp combination_attr(resource, first, name) do
    {type, constraints} =
      case Enum.find(first.calculations, fn {calculation, _} -> calculation.name == name end) do
        {calculation, _expression} ->
          {calculation.type, calculation.constraints}

        nil ->
          case Ash.Resource.Info.attribute(resource, name) do
            nil -> {nil, []}
            attribute -> {attribute.type, attribute.constraints}
          end
      end

    %Ash.Query.CombinationAttr{name: name, type: type, constraints: constraints, load?: true}
  end

  # -- combining ------------------------------------------------------------------------------

  defp combine(:base, _acc, results, _fields), do: results
  defp combine(:union_all, acc, results, _fields), do: acc ++ results
  defp combine(:union, acc, results, fields), do: uniq(acc ++ results, fields)

  defp combine(:intersect, acc, results, fields) do
    index = index(results, fields)
    acc |> Enum.filter(&member?(&1, index, fields)) |> uniq(fields)
  end

  defp combine(:except, acc, results, fields) do
    index = index(results, fields)
    acc |> Enum.reject(&member?(&1, index, fields)) |> uniq(fields)
  end

  # The records without those equal to an earlier one, in order.
  defp uniq(records, fields) do
    {kept, _index} =
      Enum.reduce(records, {[], %{}}, fn record, {kept, index} ->
        if member?(record, index, fields),
          do: {kept, index},
          else: {[record | kept], add(index, record, fields)}
      end)

    Enum.reverse(kept)
  end

  # Records indexed by their simple-equality values, each entry listing the other values of
  # the records with that key.
  defp index(records, fields), do: Enum.reduce(records, %{}, &add(&2, &1, fields))

  defp add(index, record, {simple, other}) do
    Map.update(
      index,
      values(record, simple),
      [values(record, other)],
      &[values(record, other) | &1]
    )
  end

  defp member?(record, index, {simple, other}) do
    case Map.fetch(index, values(record, simple)) do
      {:ok, candidates} ->
        values = values(record, other)
        Enum.any?(candidates, &equal?(other, values, &1))

      :error ->
        false
    end
  end

  defp equal?(fields, values, candidate) do
    [fields, values, candidate]
    |> Enum.zip()
    |> Enum.all?(fn {%{type: type}, a, b} -> Ash.Type.equal?(type, a, b) end)
  end

  defp values(record, fields), do: Enum.map(fields, &value(record, &1.name))

  defp value(record, name) do
    case record.calculations do
      %{^name => value} -> value
      _ -> Map.get(record, name)
    end
  end

  # The fields that tell records apart, split into those of simple equality and the others.
  defp fields(resource, first) do
    attributes =
      Enum.map(
        first.select || default_select(resource),
        &Ash.Resource.Info.attribute(resource, &1)
      )

    calculations = Enum.map(first.calculations, &elem(&1, 0))

    (attributes ++ calculations)
    |> Enum.reject(&is_nil/1)
    |> Enum.uniq_by(& &1.name)
    |> Enum.split_with(&(is_nil(&1.type) or Ash.Type.simple_equality?(&1.type)))
  end

  defp default_select(resource),
    do: MapSet.to_list(Ash.Resource.Info.selected_by_default_attribute_names(resource))

  # The combinations' calculations named like an attribute of the resource: their values
  # replace the attribute's in the combined records.
  defp overwriting(resource, combinations) do
    for {_type, combination} <- combinations,
        {%{name: name}, _expression} <- combination.calculations,
        Ash.Resource.Info.attribute(resource, name),
        uniq: true,
        do: name
  end

  defp overwrite(record, []), do: record

  defp overwrite(record, names) do
    {values, calculations} = Map.split(record.calculations, names)
    record |> Map.merge(values) |> Map.put(:calculations, calculations)
  end
end
