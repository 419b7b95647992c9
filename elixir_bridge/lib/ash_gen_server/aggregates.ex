defmodule AshGenServer.Aggregates do
  @moduledoc """
  Aggregates: the node's `aggregate` request where it answers exactly, Ash at runtime otherwise.

  Two kinds reach the data layer:

  - **query aggregates** (`Ash.count/2`, `Ash.sum/3`, `Ash.aggregate/3`, a page's count), through
    `c:Ash.DataLayer.run_aggregate_query/3`: `run/3`;
  - **aggregates loaded on records** (`count :post_count, :posts` in a resource, then
    `Ash.load(author, :post_count)` or a filter/sort on it), added to the data layer query with
    `add_aggregate/3` and computed on the records `run_query/2` returns: `add_loaded/2`.

  An aggregate goes to the node when everything about it is exact there: its query's filter is
  wholly pushable (see `AshGenServer.Filter`), its kind is one the node knows, and its field's
  stored values behave like Ash's (numbers for `sum`/`avg`, a type the node orders like Ash for
  `min`/`max`/`count uniq`, a pushable sort for `first`/`list`). A loaded aggregate goes to the
  node when it follows one `has_many`/`has_one`/`belongs_to` relationship to a resource of this
  data layer, with no relationship filter: per record, one `aggregate` request (for all such
  aggregates sharing a filter and sort), filtered on the relationship's destination attribute. Everything else is computed here from the records Ash
  reads (`compute/6`).
  """

  alias AshGenServer.{Client, Filter, Values}

  @node_kinds [:count, :exists, :sum, :avg, :min, :max, :first, :list]

  @doc "Whether the node can compute aggregates of this kind (the rest: none)."
  @spec kind?(atom) :: boolean
  def kind?(kind), do: kind in @node_kinds

  # -- query aggregates ---------------------------------------------------------------------

  @doc "Runs query aggregates (`c:Ash.DataLayer.run_aggregate_query/3`)."
  @spec run(AshGenServer.Query.t(), [Ash.Query.Aggregate.t()], Ash.Resource.t()) ::
          {:ok, map} | {:error, term}
  def run(query, aggregates, resource) do
    base = Filter.translate(query.filter, resource)
    base_sort = Filter.sort(query.sort, resource)
    paged? = (query.offset || 0) > 0 or not is_nil(query.limit)

    {in_node, at_runtime} =
      Enum.reduce(aggregates, {%{}, []}, fn aggregate, {in_node, at_runtime} ->
        case node_query_aggregate(aggregate, resource, query, base, base_sort, paged?) do
          {:ok, request_query, spec} ->
            {Map.update(in_node, request_query, [{aggregate, spec}], &[{aggregate, spec} | &1]),
             at_runtime}

          :error ->
            {in_node, [aggregate | at_runtime]}
        end
      end)

    with {:ok, node_results} <- run_in_node(resource, in_node),
         {:ok, runtime_results} <- run_at_runtime(query, Enum.reverse(at_runtime)) do
      {:ok, Map.merge(node_results, runtime_results)}
    end
  end

  defp node_query_aggregate(aggregate, resource, query, base, base_sort, paged?) do
    agg_query = aggregate.query
    agg_filter = Filter.translate(agg_query && agg_query.filter, resource)
    agg_sort = (agg_query && agg_query.sort) || []

    sort =
      if agg_sort != [] and not paged?,
        do: Filter.sort(agg_sort, resource),
        else: base_sort

    with true <- aggregate.resource in [nil, resource],
         true <- query.distinct in [nil, []],
         true <- base.exact? and agg_filter.exact?,
         true <- not paged? or (agg_filter.expr == true and base_sort != :error),
         {:ok, node_sort} <- sort_for(aggregate.kind, sort),
         {:ok, spec} <- spec(aggregate, resource) do
      request_query = %{
        filter: Filter.to_request(and_(base.expr, agg_filter.expr)),
        sort: node_sort,
        offset: query.offset || 0,
        limit: query.limit
      }

      {:ok, request_query, spec}
    else
      _ -> :error
    end
  end

  # `first` and `list` depend on the order; the others do not, so a sort the node cannot do
  # does not matter for them (unless offset/limit apply, checked by the caller).
  defp sort_for(kind, {:ok, sort}) when kind in [:first, :list], do: {:ok, sort}
  defp sort_for(kind, :error) when kind in [:first, :list], do: :error
  defp sort_for(_kind, {:ok, sort}), do: {:ok, sort}
  defp sort_for(_kind, :error), do: {:ok, []}

  defp run_in_node(resource, groups) do
    Enum.reduce_while(groups, {:ok, %{}}, fn {request_query, entries}, {:ok, acc} ->
      specs = Enum.map(entries, fn {_aggregate, spec} -> spec.request end)

      case Client.request(resource, {:aggregate, resource, request_query, specs}) do
        {:ok, values} when is_map(values) ->
          acc =
            Enum.reduce(entries, acc, fn {aggregate, spec}, acc ->
              Map.put(
                acc,
                aggregate.name,
                finish(spec, Map.get(values, aggregate.name), aggregate)
              )
            end)

          {:cont, {:ok, acc}}

        {:error, reason} ->
          {:halt, {:error, Client.to_ash_error(reason, resource: resource, request: :aggregate)}}

        other ->
          {:halt, {:error, Client.to_ash_error(other, resource: resource, request: :aggregate)}}
      end
    end)
  end

  defp run_at_runtime(_query, []), do: {:ok, %{}}

  defp run_at_runtime(query, aggregates) do
    with {:ok, records} <- AshGenServer.Query.run(%{query | aggregates: []}) do
      Enum.reduce_while(aggregates, {:ok, %{}}, fn aggregate, {:ok, acc} ->
        case runtime_value(records, aggregate, query.domain) do
          {:ok, value} -> {:cont, {:ok, Map.put(acc, aggregate.name, value)}}
          {:error, error} -> {:halt, {:error, error}}
        end
      end)
    end
  end

  defp runtime_value(records, aggregate, domain) do
    agg_query = aggregate.query
    context = aggregate.context || %{}

    with {:ok, records} <-
           Ash.Filter.Runtime.filter_matches(domain, records, agg_query && agg_query.filter,
             tenant: context[:tenant],
             actor: context[:actor]
           ) do
      records =
        case agg_query && agg_query.sort do
          sort when sort in [nil, []] -> records
          sort -> Ash.Actions.Sort.runtime_sort(records, sort, domain: domain, rekey?: false)
        end

      {:ok, compute_for(records, aggregate)}
    end
  end

  # -- aggregates loaded on records -----------------------------------------------------------

  @doc "Adds the query's loaded aggregates to the records `run_query/2` found."
  @spec add_loaded([Ash.Resource.record()], AshGenServer.Query.t()) ::
          {:ok, [Ash.Resource.record()]} | {:error, term}
  def add_loaded(records, %{aggregates: []}), do: {:ok, records}
  def add_loaded([], _query), do: {:ok, []}

  def add_loaded(records, query) do
    plans = Enum.map(query.aggregates, &{&1, related_plan(&1, query.resource)})

    records
    |> Enum.reduce_while({:ok, []}, fn record, {:ok, acc} ->
      case record_values(record, plans, query) do
        {:ok, values} ->
          record =
            Enum.reduce(values, record, fn {aggregate, value}, record ->
              put_value(record, aggregate, value)
            end)

          {:cont, {:ok, [record | acc]}}

        {:error, error} ->
          {:halt, {:error, error}}
      end
    end)
    |> case do
      {:ok, records} -> {:ok, Enum.reverse(records)}
      error -> error
    end
  end

  # The values of every loaded aggregate of one record: the node ones batched into one
  # `aggregate` request per destination and query, the others computed at runtime.
  defp record_values(record, plans, query) do
    {batches, others} =
      Enum.reduce(plans, {%{}, []}, fn {aggregate, plan}, {batches, others} ->
        case node_request_query(record, plan) do
          {:ok, key} ->
            {Map.update(batches, key, [{aggregate, plan}], &[{aggregate, plan} | &1]), others}

          :empty ->
            {batches, [{aggregate, {:value, compute_for([], aggregate)}} | others]}

          :error ->
            {batches, [{aggregate, :runtime} | others]}
        end
      end)

    with {:ok, node_values} <- run_batches(batches) do
      Enum.reduce_while(others, {:ok, node_values}, fn
        {aggregate, {:value, value}}, {:ok, acc} ->
          {:cont, {:ok, [{aggregate, value} | acc]}}

        {aggregate, :runtime}, {:ok, acc} ->
          case runtime_loaded_value(record, aggregate, query) do
            {:ok, value} -> {:cont, {:ok, [{aggregate, value} | acc]}}
            error -> {:halt, error}
          end
      end)
    end
  end

  defp node_request_query(_record, :error), do: :error

  defp node_request_query(record, {:ok, plan}) do
    case Map.get(record, plan.source_attribute) do
      nil ->
        # no related records: the empty-set value, no need to ask
        :empty

      value ->
        case Values.dump_comparable(plan.dest_attribute, value) do
          {:ok, native} ->
            {:ok,
             {plan.destination,
              %{
                filter: and_({:eq, plan.dest_attribute.name, native}, plan.filter),
                sort: plan.sort
              }}}

          :error ->
            :error
        end
    end
  end

  defp run_batches(batches) do
    Enum.reduce_while(batches, {:ok, []}, fn {{destination, request_query}, entries},
                                             {:ok, acc} ->
      specs = Enum.map(entries, fn {_aggregate, {:ok, plan}} -> plan.spec.request end)

      case Client.request(destination, {:aggregate, destination, request_query, specs}) do
        {:ok, values} when is_map(values) ->
          acc =
            Enum.reduce(entries, acc, fn {aggregate, {:ok, plan}}, acc ->
              [{aggregate, finish(plan.spec, Map.get(values, aggregate.name), aggregate)} | acc]
            end)

          {:cont, {:ok, acc}}

        {:error, reason} ->
          {:halt,
           {:error, Client.to_ash_error(reason, resource: destination, request: :aggregate)}}

        other ->
          {:halt,
           {:error, Client.to_ash_error(other, resource: destination, request: :aggregate)}}
      end
    end)
  end

  defp put_value(record, %{load: load}, value) when not is_nil(load),
    do: Map.put(record, load, value)

  defp put_value(record, %{name: name}, value),
    do: Map.update!(record, :aggregates, &Map.put(&1, name, value))

  # The node plan for an aggregate over one relationship, or :error.
  defp related_plan(aggregate, resource) do
    with true <- Map.get(aggregate, :related?, true),
         [name] <- aggregate.relationship_path,
         %{type: type} = rel when type in [:has_many, :has_one, :belongs_to] <-
           Ash.Resource.Info.relationship(resource, name),
         true <- is_nil(Map.get(rel, :filter)) and is_nil(Map.get(rel, :manual)),
         false <- Map.get(rel, :no_attributes?, false),
         true <- aggregate.join_filters in [nil, %{}],
         destination = rel.destination,
         AshGenServer.DataLayer <- Ash.DataLayer.data_layer(destination),
         %{} = dest_attribute <-
           Ash.Resource.Info.attribute(destination, rel.destination_attribute),
         :order <- Values.pushdown(dest_attribute.type),
         agg_query = aggregate.query,
         true <- is_nil(agg_query) or (is_nil(agg_query.limit) and agg_query.offset in [nil, 0]),
         %{exact?: true, expr: agg_expr} <-
           Filter.translate(agg_query && agg_query.filter, destination),
         {:ok, node_sort} <- related_sort(aggregate, rel, destination),
         {:ok, spec} <- spec(aggregate, destination) do
      {:ok,
       %{
         destination: destination,
         source_attribute: rel.source_attribute,
         dest_attribute: dest_attribute,
         filter: agg_expr,
         sort: node_sort,
         spec: spec
       }}
    else
      _ -> :error
    end
  end

  defp related_sort(%{kind: kind} = aggregate, rel, destination) when kind in [:first, :list] do
    case {(aggregate.query && aggregate.query.sort) || [], Map.get(rel, :sort) || []} do
      {[], rel_sort} -> Filter.sort(rel_sort, destination)
      {sort, _} -> Filter.sort(sort, destination)
    end
  end

  defp related_sort(_aggregate, _rel, _destination), do: {:ok, []}

  defp runtime_loaded_value(record, aggregate, query) do
    agg_query = aggregate.query
    context = aggregate.context || %{}
    path = aggregate.relationship_path

    related_query =
      (agg_query || Ash.Query.new(aggregate.resource))
      |> Ash.Query.unset([:load, :limit, :offset])
      |> Ash.Query.set_context(%{private: %{internal?: true}})

    related_query =
      case aggregate.field do
        %_{} = field -> Ash.Query.load(related_query, field)
        _ -> related_query
      end

    with {:ok, loaded} <-
           Ash.load(record, nested_load(path, related_query),
             domain: query.domain,
             tenant: context[:tenant],
             actor: context[:actor],
             authorize?: false
           ),
         related <-
           Ash.Filter.Runtime.get_related(
             loaded,
             path,
             false,
             aggregate.join_filters || %{},
             [record],
             query.domain
           ),
         related when is_list(related) <- related,
         {:ok, related} <-
           Ash.Filter.Runtime.filter_matches(
             query.domain,
             related,
             agg_query && agg_query.filter,
             tenant: context[:tenant],
             actor: context[:actor]
           ) do
      related =
        case agg_query && agg_query.sort do
          sort when sort in [nil, []] ->
            related

          sort ->
            Ash.Actions.Sort.runtime_sort(related, sort, domain: query.domain, rekey?: false)
        end

      {:ok, compute_for(related, aggregate)}
    else
      :unknown -> {:ok, compute_for([], aggregate)}
      {:error, error} -> {:error, error}
    end
  end

  defp nested_load([name], leaf), do: [{name, leaf}]
  defp nested_load([name | rest], leaf), do: [{name, nested_load(rest, leaf)}]

  # -- node aggregate specs -----------------------------------------------------------------

  # The node's `{Name, Kind, Field | nil, Opts}` for an aggregate over `resource`, with what is
  # needed to turn the node's answer back into Ash values, or :error.
  defp spec(%{kind: kind, name: name} = aggregate, resource) when kind in @node_kinds do
    with {:ok, attribute} <- spec_field(aggregate, resource),
         true <- field_ok?(kind, attribute, aggregate) do
      opts =
        %{}
        |> then(
          &if(aggregate.uniq? and kind in [:count, :list], do: Map.put(&1, :uniq, true), else: &1)
        )
        |> then(
          &if(aggregate.include_nil? and kind in [:first, :list],
            do: Map.put(&1, :include_nil, true),
            else: &1
          )
        )

      {:ok,
       %{
         request: {name, kind, attribute && attribute.name, opts},
         attribute: attribute
       }}
    else
      _ -> :error
    end
  end

  defp spec(_aggregate, _resource), do: :error

  defp spec_field(%{field: nil, kind: kind}, _resource) when kind in [:count, :exists],
    do: {:ok, nil}

  defp spec_field(%{field: field}, resource) when is_atom(field) and not is_nil(field) do
    case Ash.Resource.Info.attribute(resource, field) do
      nil -> :error
      attribute -> {:ok, attribute}
    end
  end

  defp spec_field(_aggregate, _resource), do: :error

  defp field_ok?(:exists, _attribute, _aggregate), do: true
  defp field_ok?(:count, nil, _aggregate), do: true

  defp field_ok?(:count, attribute, aggregate),
    do: not aggregate.uniq? or Values.pushdown(attribute.type) == :order

  defp field_ok?(kind, attribute, aggregate) when kind in [:sum, :avg],
    do: not aggregate.uniq? and Values.numeric?(attribute.type)

  defp field_ok?(kind, attribute, _aggregate) when kind in [:min, :max],
    do: Values.pushdown(attribute.type) == :order

  defp field_ok?(:first, _attribute, _aggregate), do: true

  defp field_ok?(:list, attribute, aggregate),
    do: not aggregate.uniq? or Values.pushdown(attribute.type) == :order

  defp finish(%{request: {_, kind, _, _}, attribute: attribute}, value, aggregate) do
    value =
      case kind do
        kind when kind in [:min, :max, :first] -> cast(attribute, value)
        :list -> Enum.map(value || [], &cast(attribute, &1))
        _ -> value
      end

    if is_nil(value), do: aggregate.default_value, else: value
  end

  defp cast(_attribute, nil), do: nil

  defp cast(attribute, value) do
    case Values.cast_stored(attribute, value) do
      {:ok, value} -> value
      :error -> value
    end
  end

  defp and_(true, x), do: x
  defp and_(x, true), do: x
  defp and_(x, y), do: {:and, x, y}

  # -- runtime computation ------------------------------------------------------------------

  defp compute_for(records, aggregate) do
    field =
      aggregate.field ||
        case aggregate.kind do
          :count -> nil
          _ -> Enum.at(Ash.Resource.Info.primary_key(aggregate.resource), 0)
        end

    compute(
      records,
      aggregate.kind,
      field,
      aggregate.uniq?,
      aggregate.include_nil?,
      aggregate.default_value
    )
  end

  @doc """
  Computes an aggregate over records already filtered and sorted, with Ash's semantics: nils
  are ignored except by `count` without a field and by `first`/`list` with `include_nil?`;
  decimals are summed, averaged and compared as decimals; an empty result is `default`.
  """
  @spec compute([map], atom, atom | struct | nil, boolean, boolean, term) :: term
  def compute(records, kind, field, uniq?, include_nil?, default) do
    values = Enum.map(records, &field_value(&1, field))

    value =
      case kind do
        :exists ->
          records != []

        :count when is_nil(field) ->
          length(records)

        :count ->
          values |> Enum.reject(&is_nil/1) |> maybe_uniq(uniq?) |> length()

        :first ->
          if include_nil?, do: List.first(values), else: Enum.find(values, &(not is_nil(&1)))

        :list ->
          values
          |> then(&if(include_nil?, do: &1, else: Enum.reject(&1, fn v -> is_nil(v) end)))
          |> maybe_uniq(uniq?)

        :sum ->
          values |> Enum.reject(&is_nil/1) |> maybe_uniq(uniq?) |> sum()

        :avg ->
          values |> Enum.reject(&is_nil/1) |> maybe_uniq(uniq?) |> avg()

        :min ->
          values |> Enum.reject(&is_nil/1) |> extreme(:lt)

        :max ->
          values |> Enum.reject(&is_nil/1) |> extreme(:gt)
      end

    if is_nil(value), do: default, else: value
  end

  defp maybe_uniq(values, true), do: Enum.uniq(values)
  defp maybe_uniq(values, _), do: values

  defp sum([]), do: nil
  defp sum([%Decimal{} | _] = values), do: Enum.reduce(values, Decimal.new(0), &Decimal.add/2)
  defp sum(values), do: Enum.sum(values)

  defp avg([]), do: nil
  defp avg([%Decimal{} | _] = values), do: Decimal.div(sum(values), length(values))
  defp avg(values), do: sum(values) / length(values)

  defp extreme([], _), do: nil

  defp extreme([first | rest], wanted) do
    Enum.reduce(rest, first, fn value, best ->
      if Comp.compare(value, best) == wanted, do: value, else: best
    end)
  end

  defp field_value(nil, _field), do: nil
  defp field_value(_record, nil), do: nil
  defp field_value(record, field) when is_atom(field), do: Map.get(record, field)

  defp field_value(record, %struct{load: load, name: name})
       when struct in [Ash.Query.Aggregate, Ash.Query.Calculation] do
    cond do
      load -> Map.get(record, load)
      struct == Ash.Query.Aggregate -> Map.get(record.aggregates, name)
      true -> Map.get(record.calculations, name)
    end
  end

  defp field_value(record, %{name: name}), do: Map.get(record, name)
end
