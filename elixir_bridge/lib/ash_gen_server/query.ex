defmodule AshGenServer.Query do
  @moduledoc """
  The data layer query for `AshGenServer.DataLayer`, and how it runs.

  Ash builds the struct through the data layer callbacks (`filter/3`, `sort/3`, `limit/3`...).
  `run/1` then decides what the node does and what Ash does afterwards:

  1. the filter is translated by `AshGenServer.Filter`; its pushable part is always sent;
  2. a filter that is exactly equality on every primary-key field becomes one `get`;
  3. the sort is sent when every sort field has a type the node orders like Ash, else Ash sorts
     the results (`Ash.Actions.Sort.runtime_sort/3`);
  4. offset and limit are sent only when the node evaluates both the filter and the sort
     wholly; otherwise they are applied here after the runtime filter and sort;
     `distinct` (and `distinct_sort`) are always applied here
     (`Ash.Actions.Sort.runtime_distinct/3`), so with them the sort and paging are too;
  5. when the filter was not wholly pushed down, `Ash.Filter.Runtime` checks it on every
     record the node returned;
  6. aggregates loaded on the records are added by `AshGenServer.Aggregates`, and expression
     calculations are evaluated on them by Ash (`Ash.Expr.eval_hydrated/2`): the node has no
     expression language beyond filters.

  Every node call of the query waits the read's own `:timeout` when it has one (`timeout`,
  from `read_timeout/1`), else the resource's call timeout: a long read is not cut short, and
  a call that outlasts it is Ash's `Ash.Error.Invalid.Timeout`.

  A combination query (`Ash.Query.combination_of/2`, `combination_of` set) runs each of its
  combinations as above and combines their records (`AshGenServer.Combination`); its own
  filter, sort, distinct, offset and limit then apply in Elixir, before its aggregates and
  calculations.
  """

  alias AshGenServer.{Aggregates, Combination, Filter, Results, Values}
  alias AshGenServer.DataLayer.Requests

  defstruct [
    :resource,
    :domain,
    :filter,
    :limit,
    :tenant,
    :distinct_sort,
    :select,
    :timeout,
    offset: 0,
    sort: [],
    distinct: [],
    combination_of: [],
    aggregates: [],
    calculations: [],
    context: %{}
  ]

  @type t :: %__MODULE__{}

  @typedoc "What `plan/1` decided: the node request and what is left to do in Elixir."
  @type plan :: %{
          request: {:get, map} | {:query, map},
          runtime_filter?: boolean,
          runtime_sort?: boolean,
          runtime_page?: boolean
        }

  @doc "Decides which request goes to the node and what Ash must still do (see moduledoc)."
  @spec plan(t) :: plan
  def plan(%__MODULE__{resource: resource} = query) do
    filter = Filter.translate(query.filter, resource)
    sort = if distinct?(query), do: :error, else: Filter.sort(query.sort, resource)
    node_sort = if sort == :error, do: [], else: elem(sort, 1)
    page_in_node? = filter.exact? and sort != :error
    primary_key = Ash.Resource.Info.primary_key(resource)

    request =
      with true <- filter.exact?,
           {:ok, pk} <- Filter.primary_key_lookup(filter.expr, primary_key) do
        {:get, pk}
      else
        _ ->
          request = %{
            filter: Filter.to_request(filter.expr),
            sort: node_sort,
            offset: if(page_in_node?, do: query.offset || 0, else: 0),
            limit: if(page_in_node?, do: query.limit, else: nil)
          }

          if page_in_node? and select?(query),
            do: {:query, Map.put(request, :select, query.select)},
            else: {:query, request}
      end

    %{
      request: request,
      runtime_filter?: not filter.exact?,
      runtime_sort?: sort == :error,
      runtime_page?: match?({:get, _}, request) or not page_in_node?
    }
  end

  # The select goes to the node when nothing here needs the fields left out: the filter and
  # sort are wholly the node's, and no calculation, aggregate or distinct is computed here.
  defp select?(query) do
    is_list(query.select) and query.calculations == [] and query.aggregates == [] and
      not distinct?(query)
  end

  @doc "What names the query's resource in a request (`AshGenServer.DataLayer.Requests.target/2`)."
  @spec target(t) :: Ash.Resource.t() | {Ash.Resource.t(), term}
  def target(%__MODULE__{resource: resource, tenant: tenant}),
    do: Requests.target(resource, tenant)

  @doc "Runs the query: the node request, then whatever `plan/1` left to Ash."
  @spec run(t) :: {:ok, [Ash.Resource.record()]} | {:error, term}
  def run(%__MODULE__{combination_of: [_ | _]} = query) do
    with {:ok, records} <- Combination.records(query, &run/1) do
      query = Combination.prepare(query)
      sort_opts = [maybe_not_distinct?: Combination.maybe_not_distinct?(query)]
      plan = %{runtime_filter?: query.filter != nil, runtime_sort?: true, runtime_page?: true}
      finish(records, query, plan, sort_opts)
    end
  end

  def run(%__MODULE__{resource: resource} = query) do
    plan = plan(query)

    with {:ok, stored} <- fetch(resource, target(query), plan.request, query.timeout),
         {:ok, records} <- Values.cast_records(resource, stored) do
      finish(records, query, plan, [])
    end
  end

  defp finish(records, query, plan, sort_opts) do
    with {:ok, records} <- maybe_runtime_filter(records, query, plan.runtime_filter?),
         records <- maybe_runtime_sort(records, query, plan.runtime_sort?, sort_opts),
         records <- maybe_page(records, query, plan.runtime_page?) do
      add_loaded(records, query)
    end
  end

  @doc """
  Adds to records read for `query` what it loads on them: aggregates (`AshGenServer.Aggregates`)
  and expression calculations (evaluated by Ash).
  """
  @spec add_loaded([Ash.Resource.record()], t) :: {:ok, [Ash.Resource.record()]} | {:error, term}
  def add_loaded(records, query) do
    with {:ok, records} <- Aggregates.add_loaded(records, query) do
      add_calculations(records, query)
    end
  end

  defp add_calculations(records, %{calculations: []}), do: {:ok, records}

  defp add_calculations(records, query) do
    actor = get_in(query.context, [:private, :actor])
    Results.map_ok(records, &calculate(&1, query, actor))
  end

  # The record with every calculation of the query evaluated on it.
  defp calculate(record, query, actor) do
    Enum.reduce_while(query.calculations, {:ok, record}, fn {calculation, expression},
                                                            {:ok, record} ->
      case Ash.Expr.eval_hydrated(expression,
             record: record,
             resource: query.resource,
             domain: query.domain,
             actor: calculation.context.actor || actor,
             tenant: calculation.context.tenant || query.tenant
           ) do
        {:ok, value} -> {:cont, {:ok, put_calculation(record, calculation, value)}}
        :unknown -> {:cont, {:ok, put_calculation(record, calculation, nil)}}
        {:error, error} -> {:halt, {:error, error}}
      end
    end)
  end

  defp put_calculation(record, %{load: load}, value) when not is_nil(load),
    do: Map.put(record, load, value)

  defp put_calculation(record, %{name: name}, value),
    do: Map.update!(record, :calculations, &Map.put(&1, name, value))

  @doc """
  Sends a request `plan/1` made (`{:get, pk}` or `{:query, map}`); the stored records. The call
  waits `timeout` (the read's, see the `:timeout` field), else the resource's call timeout.
  """
  @spec fetch(Ash.Resource.t(), term, {:get, map} | {:query, map}, timeout | nil) ::
          {:ok, [map]} | {:error, term}
  def fetch(resource, target, request, timeout \\ nil)

  def fetch(resource, target, {:get, pk}, timeout) do
    case Requests.run(resource, {:get, target, pk}, request: :get, timeout: timeout) do
      {:ok, record} -> {:ok, [record]}
      {:error, %Ash.Error.Query.NotFound{}} -> {:ok, []}
      {:error, error} -> {:error, error}
    end
  end

  def fetch(resource, target, {:query, request}, timeout) do
    Requests.run(resource, {:query, target, request},
      request: :query,
      expect: &is_list/1,
      timeout: timeout
    )
  end

  @doc """
  The read's own timeout (ms or `:infinity`), for the node calls of its query: the `:timeout`
  given to the read (`Ash.read(query, timeout: ...)`, put in the query context by
  `AshGenServer.DataLayer.ReadTimeout`), else the read action's `timeout`; `nil` when neither
  is set (the calls then use the resource's call timeout).
  """
  @spec read_timeout(map) :: timeout | nil
  def read_timeout(context) do
    case context do
      %{ash_gen_server: %{read_timeout: timeout}} when not is_nil(timeout) -> timeout
      %{action: %{timeout: timeout}} -> timeout
      _ -> nil
    end
  end

  @doc """
  When the third argument is true, the records matching the query's filter, checked by Ash
  (`Ash.Filter.Runtime`); `opts` are added to its options (`parent:`, the record `parent(...)`
  refers to).
  """
  @spec maybe_runtime_filter([Ash.Resource.record()], t, boolean, keyword) ::
          {:ok, [Ash.Resource.record()]} | {:error, term}
  def maybe_runtime_filter(records, query, runtime?, opts \\ [])
  def maybe_runtime_filter(records, _query, false, _opts), do: {:ok, records}
  def maybe_runtime_filter([], _query, _, _opts), do: {:ok, []}

  def maybe_runtime_filter(records, query, true, opts) do
    # the read's tenant (`set_tenant/3` only sets `query.tenant` for the `:context` strategy)
    Ash.Filter.Runtime.filter_matches(
      query.domain,
      records,
      query.filter,
      [
        tenant: get_in(query.context, [:private, :tenant]) || query.tenant,
        actor: get_in(query.context, [:private, :actor])
      ] ++ opts
    )
  end

  @doc "Whether the query asks for distinct records."
  @spec distinct?(t) :: boolean
  def distinct?(query), do: query.distinct not in [nil, []]

  @doc """
  When the third argument is true, the records sorted (and made distinct) by Ash as the query
  asks; `opts` are added to the sort's options.
  """
  @spec maybe_runtime_sort([Ash.Resource.record()], t, boolean, keyword) ::
          [Ash.Resource.record()]
  def maybe_runtime_sort(records, query, runtime?, opts \\ [])
  def maybe_runtime_sort(records, _query, false, _opts), do: records

  def maybe_runtime_sort(records, query, true, opts) do
    opts = [domain: query.domain, rekey?: false] ++ opts

    cond do
      not distinct?(query) ->
        Ash.Actions.Sort.runtime_sort(records, query.sort, opts)

      query.distinct_sort in [nil, []] ->
        records
        |> Ash.Actions.Sort.runtime_sort(query.sort, opts)
        |> Ash.Actions.Sort.runtime_distinct(query.distinct, opts)

      true ->
        records
        |> Ash.Actions.Sort.runtime_sort(query.distinct_sort, opts)
        |> Ash.Actions.Sort.runtime_distinct(query.distinct, opts)
        |> Ash.Actions.Sort.runtime_sort(query.sort, opts)
    end
  end

  @doc "When the third argument is true, the query's page (offset, limit) of the records."
  @spec maybe_page([Ash.Resource.record()], t, boolean) :: [Ash.Resource.record()]
  def maybe_page(records, _query, false), do: records

  def maybe_page(records, query, true) do
    records = Enum.drop(records, query.offset || 0)
    if query.limit, do: Enum.take(records, query.limit), else: records
  end
end
