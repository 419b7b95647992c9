defmodule AshGenServer.Aggregates do
  # Parents per grouped `aggregate` request: the `in` filter holds at most this many values.
  @batch_size 1_000

  @moduledoc """
  Aggregates: the node's `aggregate` request where it answers exactly, Ash at runtime otherwise.

  Two kinds reach the data layer:

  - **query aggregates** (`Ash.count/2`, `Ash.sum/3`, `Ash.aggregate/3`, a page's count), through
    `c:Ash.DataLayer.run_aggregate_query/3`: `run/4`, which is given the function that reads a
    query's records (`AshGenServer.Query.run/1`) for those it computes at runtime;
  - **aggregates loaded on records** (`count :post_count, :posts` in a resource, then
    `Ash.load(author, :post_count)` or a filter/sort on it), added to the data layer query with
    `add_aggregate/3` and computed on the records `run_query/2` returns: `add_loaded/2`, called
    by `AshGenServer.Query.run/1`.

  So `AshGenServer.Query` uses this module, never the other way round.

  An aggregate goes to the node when everything about it is exact there: its query's filter is
  wholly pushable (see `AshGenServer.Filter`), its kind is one the node knows, and its field's
  stored values behave like Ash's (numbers for `sum`/`avg`, a type the node orders like Ash for
  `min`/`max`/`count uniq`, a pushable sort for `first`/`list`).

  A loaded aggregate goes to the node when it follows one `has_many`/`has_one`/`belongs_to`
  relationship to a resource of this data layer, with no relationship filter nor a
  `read_action` with a `modify_query` (which only a read through Ash runs), and the
  relationship's destination attribute is of a type the node compares and groups exactly. It is
  computed for all the records at once: one grouped `aggregate` request
  (`{aggregate, Destination, Query, Aggregates, \#{group_by => DestAttribute}}`, the query
  filtered on `{in, DestAttribute, ParentValues}`) per destination attribute, aggregate filter
  and sort, and per batch of #{@batch_size} parents; every aggregate sharing the filter goes in
  the same request (those that do not depend on the order share it with one that does). A parent
  without related records (absent from the groups, or with a `nil` source attribute) gets the
  empty-set value. Everything else is computed here from the records Ash loads, with one
  `Ash.load/3` of the related records per aggregate for all the records (`compute/6`).

  Every request goes through `AshGenServer.DataLayer.Requests`, so the
  `[:ash_gen_server, :request, ...]` telemetry events count them.
  """

  alias AshGenServer.{Filter, Results, Values}
  alias AshGenServer.DataLayer.Requests

  @node_kinds [:count, :exists, :sum, :avg, :min, :max, :first, :list]

  @doc "Whether the node can compute aggregates of this kind (the rest: none)."
  @spec kind?(atom) :: boolean
  def kind?(kind), do: kind in @node_kinds

  # -- query aggregates ---------------------------------------------------------------------

  @doc """
  Runs query aggregates (`c:Ash.DataLayer.run_aggregate_query/3`). Those the node cannot
  compute exactly are computed here on the records `read` returns for the query without its
  aggregates (the data layer passes `AshGenServer.Query.run/1`).
  """
  @spec run(
          AshGenServer.Query.t(),
          [Ash.Query.Aggregate.t()],
          Ash.Resource.t(),
          (AshGenServer.Query.t() -> {:ok, [Ash.Resource.record()]} | {:error, term})
        ) :: {:ok, map} | {:error, term}
  def run(query, aggregates, resource, read) do
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

    with {:ok, node_results} <- run_in_node(resource, query.tenant, in_node),
         {:ok, runtime_results} <- run_at_runtime(query, Enum.reverse(at_runtime), read) do
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

  defp run_in_node(resource, tenant, groups) do
    Enum.reduce_while(groups, {:ok, %{}}, fn {request_query, entries}, {:ok, acc} ->
      specs = Enum.map(entries, fn {_aggregate, spec} -> spec.request end)

      case Requests.run(
             resource,
             {:aggregate, Requests.target(resource, tenant), request_query, specs},
             request: :aggregate,
             expect: &is_map/1
           ) do
        {:ok, values} ->
          acc =
            Enum.reduce(entries, acc, fn {aggregate, spec}, acc ->
              Map.put(
                acc,
                aggregate.name,
                finish(spec, Map.get(values, aggregate.name), aggregate)
              )
            end)

          {:cont, {:ok, acc}}

        {:error, error} ->
          {:halt, {:error, error}}
      end
    end)
  end

  defp run_at_runtime(_query, [], _read), do: {:ok, %{}}

  defp run_at_runtime(query, aggregates, read) do
    with {:ok, records} <- read.(%{query | aggregates: []}) do
      compute(records, aggregates, query.domain)
    end
  end

  @doc """
  Computes query aggregates here over `records` (a query's records, read already):
  `%{Name => Value}`.
  """
  @spec compute([Ash.Resource.record()], [Ash.Query.Aggregate.t()], Ash.Domain.t()) ::
          {:ok, map} | {:error, term}
  def compute(records, aggregates, domain) do
    Enum.reduce_while(aggregates, {:ok, %{}}, fn aggregate, {:ok, acc} ->
      case runtime_value(records, aggregate, domain) do
        {:ok, value} -> {:cont, {:ok, Map.put(acc, aggregate.name, value)}}
        {:error, error} -> {:halt, {:error, error}}
      end
    end)
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
    records = List.to_tuple(records)
    indices = Enum.to_list(0..(tuple_size(records) - 1))

    {node_plans, runtime} =
      Enum.reduce(query.aggregates, {[], []}, fn aggregate, {node_plans, runtime} ->
        case related_plan(aggregate, query.resource) do
          {:ok, plan} -> {[{aggregate, plan} | node_plans], runtime}
          :error -> {node_plans, [{aggregate, indices} | runtime]}
        end
      end)

    with {:ok, values, leftovers} <-
           node_loaded(records, Enum.reverse(node_plans), query.tenant),
         {:ok, values} <- runtime_loaded(records, Enum.reverse(runtime, leftovers), values, query) do
      {:ok,
       for i <- indices do
         Enum.reduce(query.aggregates, elem(records, i), fn aggregate, record ->
           put_value(record, aggregate, Map.fetch!(values, {i, key(aggregate)}))
         end)
       end}
    end
  end

  defp key(aggregate), do: {aggregate.name, aggregate.load}

  # The aggregates over one relationship to a resource of this data layer, for every record at
  # once: one `aggregate` request per (destination attribute, aggregate filter, sort) and batch
  # of parents, `{in, DestAttribute, ParentValues}` grouped by the destination attribute; a
  # parent without a group gets the empty-set value. Aggregates that do not depend on the order
  # share a request with those that do. Returns the values by `{index, aggregate key}` and what
  # is left to compute at runtime (parents whose key the node cannot compare).
  defp node_loaded(_records, [], _tenant), do: {:ok, %{}, []}

  defp node_loaded(records, plans, tenant) do
    plans
    |> Enum.group_by(fn {_aggregate, plan} ->
      {plan.destination, plan.source_attribute, plan.dest_attribute, plan.filter}
    end)
    |> Enum.reduce_while({:ok, %{}, []}, fn {{destination, source, dest, filter}, entries},
                                            {:ok, values, leftovers} ->
      parents = parent_keys(records, source, dest)
      natives = for {_i, {:ok, native}} <- parents, uniq: true, do: native

      case grouped({destination, tenant}, dest.name, filter, entries, natives) do
        {:ok, groups} ->
          {values, leftovers} = spread(parents, entries, groups, values, leftovers)
          {:cont, {:ok, values, leftovers}}

        {:error, error} ->
          {:halt, {:error, error}}
      end
    end)
  end

  # Each record's key as the destination stores it: `{i, {:ok, native}}`, `{i, :empty}` (nil:
  # no related records) or `{i, :error}` (a value the node cannot compare exactly).
  defp parent_keys(records, source, dest) do
    for i <- 0..(tuple_size(records) - 1) do
      case Map.get(elem(records, i), source) do
        nil ->
          {i, :empty}

        value ->
          case Values.dump_comparable(dest, value) do
            {:ok, native} -> {i, {:ok, native}}
            :error -> {i, :error}
          end
      end
    end
  end

  # `%{GroupValue => %{Name => Value}}` for the parents' keys, over as many requests as there
  # are sorts (and batches of keys).
  defp grouped(_destination, _field, _filter, _entries, []), do: {:ok, %{}}

  defp grouped({destination, tenant}, field, filter, entries, natives) do
    {sorted, free} = Enum.split_with(entries, fn {_aggregate, plan} -> plan.sort != [] end)

    requests =
      case Enum.group_by(sorted, fn {_aggregate, plan} -> plan.sort end) |> Enum.sort() do
        [] -> [{[], free}]
        [{sort, first} | rest] -> [{sort, first ++ free} | rest]
      end

    for {sort, entries} <- requests, batch <- Enum.chunk_every(natives, @batch_size) do
      {sort, entries, batch}
    end
    |> Enum.reduce_while({:ok, %{}}, fn {sort, entries, batch}, {:ok, acc} ->
      specs = Enum.map(entries, fn {_aggregate, plan} -> plan.spec.request end)
      request_query = %{filter: and_({:in, field, batch}, filter), sort: sort}

      case Requests.run(
             destination,
             {:aggregate, Requests.target(destination, tenant), request_query, specs,
              %{group_by: field}},
             request: :aggregate,
             expect: &is_list/1
           ) do
        {:ok, groups} ->
          acc =
            Enum.reduce(groups, acc, fn {group, group_values}, acc ->
              Map.update(acc, group, group_values, &Map.merge(&1, group_values))
            end)

          {:cont, {:ok, acc}}

        {:error, error} ->
          {:halt, {:error, error}}
      end
    end)
  end

  defp spread(parents, entries, groups, values, leftovers) do
    Enum.reduce(parents, {values, leftovers}, fn
      {i, :error}, {values, leftovers} ->
        {values, Enum.map(entries, fn {aggregate, _plan} -> {aggregate, [i]} end) ++ leftovers}

      {i, parent}, {values, leftovers} ->
        group =
          case parent do
            {:ok, native} -> Map.get(groups, native)
            :empty -> nil
          end

        values =
          Enum.reduce(entries, values, fn {aggregate, plan}, values ->
            value =
              case group do
                # no related records: the empty-set value
                nil -> compute_for([], aggregate)
                group -> finish(plan.spec, Map.get(group, aggregate.name), aggregate)
              end

            Map.put(values, {i, key(aggregate)}, value)
          end)

        {values, leftovers}
    end)
  end

  defp put_value(record, %{load: load}, value) when not is_nil(load),
    do: Map.put(record, load, value)

  defp put_value(record, %{name: name}, value),
    do: Map.update!(record, :aggregates, &Map.put(&1, name, value))

  # The node plan for an aggregate over one relationship, or :error. The destination must be a
  # resource of this data layer, like `resource` (compared through `resource` so that this
  # module does not depend on `AshGenServer.DataLayer`, which uses it). The destination
  # attribute must compare exactly (`:order`) and group exactly: the node groups by exact
  # equality, which is `==` for every ordered type but floats (`1 == 1.0`).
  defp related_plan(aggregate, resource) do
    with true <- Map.get(aggregate, :related?, true),
         [name] <- aggregate.relationship_path,
         %{type: type} = rel when type in [:has_many, :has_one, :belongs_to] <-
           Ash.Resource.Info.relationship(resource, name),
         true <- is_nil(Map.get(rel, :filter)) and is_nil(Map.get(rel, :manual)),
         false <- Map.get(rel, :no_attributes?, false),
         true <- aggregate.join_filters in [nil, %{}],
         destination = rel.destination,
         true <- Ash.DataLayer.data_layer(destination) == Ash.DataLayer.data_layer(resource),
         %{} = dest_attribute <-
           Ash.Resource.Info.attribute(destination, rel.destination_attribute),
         :order <- Values.pushdown(dest_attribute.type),
         false <- dest_attribute.type == Ash.Type.Float,
         agg_query = aggregate.query,
         true <- is_nil(agg_query) or (is_nil(agg_query.limit) and agg_query.offset in [nil, 0]),
         false <- modify_query?(agg_query),
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

  # An aggregate whose `read_action` has a `modify_query`: the hook changes the data layer
  # query, which only a read through Ash runs, so Ash computes the aggregate.
  defp modify_query?(%Ash.Query{action: %{modify_query: modify_query}})
       when not is_nil(modify_query),
       do: true

  defp modify_query?(_query), do: false

  defp related_sort(%{kind: kind} = aggregate, rel, destination) when kind in [:first, :list] do
    case {(aggregate.query && aggregate.query.sort) || [], Map.get(rel, :sort) || []} do
      {[], rel_sort} -> Filter.sort(rel_sort, destination)
      {sort, _} -> Filter.sort(sort, destination)
    end
  end

  defp related_sort(_aggregate, _rel, _destination), do: {:ok, []}

  # Aggregates Ash computes: for each, the related records of every record that needs it are
  # loaded at once (one `Ash.load/3`), then filtered, sorted and aggregated per record.
  defp runtime_loaded(records, runtime, values, query) do
    runtime
    |> Enum.group_by(fn {aggregate, _indices} -> aggregate end, fn {_, indices} -> indices end)
    |> Enum.reduce_while({:ok, values}, fn {aggregate, indices}, {:ok, values} ->
      indices = indices |> List.flatten() |> Enum.uniq()

      case runtime_loaded_values(Enum.map(indices, &elem(records, &1)), aggregate, query) do
        {:ok, computed} ->
          values =
            indices
            |> Enum.zip(computed)
            |> Enum.reduce(values, fn {i, value}, values ->
              Map.put(values, {i, key(aggregate)}, value)
            end)

          {:cont, {:ok, values}}

        {:error, error} ->
          {:halt, {:error, error}}
      end
    end)
  end

  # An unrelated aggregate (`count(Other, filter: ...)`): one aggregate query on the other
  # resource per record, with the record's values in place of `parent(...)`. Ash adds no
  # authorization filter to an unrelated aggregate's query: when the read is authorized
  # (`context.authorize?`), the other resource's read policies apply here, for the actor.
  defp runtime_loaded_values(records, %{related?: false} = aggregate, query) do
    context = aggregate.context || %{}

    Results.map_ok(records, fn record ->
      agg_query = aggregate.query || Ash.Query.new(aggregate.resource)

      filter =
        agg_query.filter &&
          Ash.Filter.map(agg_query.filter, fn
            %Ash.Query.Parent{expr: expr} ->
              case Ash.Expr.eval(expr, record: record, resource: query.resource) do
                {:ok, value} -> value
                _ -> nil
              end

            other ->
              other
          end)

      field = if aggregate.field, do: [field: aggregate.field], else: []

      case Ash.aggregate(
             %{agg_query | filter: filter, sort: agg_query.sort || []},
             {aggregate.name, aggregate.kind, field},
             domain: query.domain,
             tenant: context[:tenant],
             actor: context[:actor],
             authorize?: context[:authorize?] || false
           ) do
        # (`false` of an `exists` stays `false`: only a missing value takes the default)
        {:ok, values} -> {:ok, nil_default(Map.get(values, aggregate.name), aggregate)}
        {:error, error} -> {:error, error}
      end
    end)
  end

  defp runtime_loaded_values(records, aggregate, query) do
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
           Ash.load(records, nested_load(path, related_query),
             domain: query.domain,
             tenant: context[:tenant],
             actor: context[:actor],
             authorize?: false
           ) do
      records
      |> Enum.zip(loaded)
      |> Results.map_ok(fn {record, loaded} ->
        related_value(record, loaded, aggregate, query)
      end)
    end
  end

  defp nil_default(nil, aggregate), do: aggregate.default_value
  defp nil_default(value, _aggregate), do: value

  defp related_value(record, loaded, aggregate, query) do
    agg_query = aggregate.query
    context = aggregate.context || %{}

    with related when is_list(related) <-
           Ash.Filter.Runtime.get_related(
             loaded,
             aggregate.relationship_path,
             false,
             aggregate.join_filters || %{},
             [record],
             query.domain
           ),
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
