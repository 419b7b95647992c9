defmodule Bench.InProcessDataLayer do
  @moduledoc """
  An Ash 3 data layer with the original `ash_gen_server` design, for comparison: every record is
  a `GenServer` on the Ash application's own node, registered in a unique `Registry` under
  `{resource, primary_key}` and started under a `DynamicSupervisor`.

  - create: starts the record's server (which registers itself);
  - a read whose filter is equality on the whole primary key: one Registry look-up and one call;
  - any other read: every record server of the resource is called for its record, one at a time,
    and the filter is applied with `Ash.Filter.Runtime`, then sort, offset and limit;
  - update: one call to the record's server, which merges the changeset's attributes;
  - destroy: the server is stopped.

  Written for the benchmark (no timers, no multitenancy, no transactions).
  """
  @behaviour Ash.DataLayer

  alias Bench.InProcessDataLayer.Server

  @registry Bench.InProcessDataLayer.Registry
  @supervisor Bench.InProcessDataLayer.Supervisor

  defmodule Query do
    @moduledoc false
    defstruct [:resource, :domain, :filter, :limit, offset: 0, sort: []]
  end

  @doc "The processes the data layer needs on the local node (started by `Bench.Application`)."
  def children do
    [
      {Registry, keys: :unique, name: @registry},
      {DynamicSupervisor, strategy: :one_for_one, name: @supervisor}
    ]
  end

  def registry, do: @registry

  @doc "Stops every record server of the resource."
  def clear(resource) do
    for {_pk, pid} <- servers(resource), do: DynamicSupervisor.terminate_child(@supervisor, pid)
    :ok
  end

  @impl true
  def can?(_, :create), do: true
  def can?(_, :read), do: true
  def can?(_, :update), do: true
  def can?(_, :destroy), do: true
  def can?(_, :filter), do: true
  def can?(_, :boolean_filter), do: true
  def can?(_, :nested_expressions), do: true
  def can?(_, {:filter_expr, _}), do: true
  def can?(_, :sort), do: true
  def can?(_, {:sort, _}), do: true
  def can?(_, :limit), do: true
  def can?(_, :offset), do: true
  def can?(_, :composite_primary_key), do: true
  def can?(_, _), do: false

  @impl true
  def resource_to_query(resource, domain), do: %Query{resource: resource, domain: domain}

  @impl true
  def filter(%Query{filter: nil} = query, filter, _resource), do: {:ok, %{query | filter: filter}}

  def filter(%Query{} = query, filter, _resource) do
    with {:ok, filter} <- Ash.Filter.add_to_filter(query.filter, filter),
         do: {:ok, %{query | filter: filter}}
  end

  @impl true
  def sort(query, sort, _resource), do: {:ok, %{query | sort: sort}}

  @impl true
  def limit(query, limit, _resource), do: {:ok, %{query | limit: limit}}

  @impl true
  def offset(query, offset, _resource), do: {:ok, %{query | offset: offset}}

  @impl true
  def run_query(%Query{resource: resource} = query, _resource) do
    case primary_key_lookup(query) do
      {:ok, pk} ->
        case whereis(resource, pk) do
          nil ->
            {:ok, []}

          pid ->
            {:ok, record} = Server.get(pid)
            {:ok, page([record], query)}
        end

      :error ->
        scan(query)
    end
  end

  defp primary_key_lookup(%Query{filter: nil}), do: :error

  defp primary_key_lookup(%Query{resource: resource, filter: filter}) do
    resource
    |> Ash.Resource.Info.primary_key()
    |> Enum.reduce_while({:ok, %{}}, fn field, {:ok, pk} ->
      case Ash.Filter.fetch_simple_equality_predicate(filter, field) do
        {:ok, value} -> {:cont, {:ok, Map.put(pk, field, value)}}
        :error -> {:halt, :error}
      end
    end)
    |> case do
      {:ok, pk} -> if only_primary_key?(filter, pk), do: {:ok, pk}, else: :error
      :error -> :error
    end
  end

  # `id == 1 and age > 3` must still be checked against the record: only a filter made of the
  # primary-key equalities alone is answered without the runtime filter.
  defp only_primary_key?(%Ash.Filter{expression: expression}, pk),
    do: only_primary_key?(expression, pk)

  defp only_primary_key?(%Ash.Query.BooleanExpression{op: :and, left: l, right: r}, pk),
    do: only_primary_key?(l, pk) and only_primary_key?(r, pk)

  defp only_primary_key?(%Ash.Query.Operator.Eq{left: %Ash.Query.Ref{} = ref}, pk),
    do: Map.has_key?(pk, ref_name(ref))

  defp only_primary_key?(%Ash.Query.Operator.Eq{right: %Ash.Query.Ref{} = ref}, pk),
    do: Map.has_key?(pk, ref_name(ref))

  defp only_primary_key?(_, _), do: false

  defp ref_name(%Ash.Query.Ref{attribute: %{name: name}}), do: name
  defp ref_name(%Ash.Query.Ref{attribute: name}), do: name

  # The original's slow path: call every record server in turn, then filter in the caller.
  defp scan(%Query{resource: resource, domain: domain} = query) do
    records =
      resource
      |> servers()
      |> Enum.reduce([], fn {_pk, pid}, acc ->
        case Server.get(pid) do
          {:ok, record} -> [record | acc]
          _ -> acc
        end
      end)

    with {:ok, records} <- Ash.Filter.Runtime.filter_matches(domain, records, query.filter) do
      records =
        if query.sort in [nil, []] do
          records
        else
          Ash.Actions.Sort.runtime_sort(records, query.sort, domain: domain)
        end

      {:ok, page(records, query)}
    end
  end

  defp page(records, query) do
    records = Enum.drop(records, query.offset || 0)
    if query.limit, do: Enum.take(records, query.limit), else: records
  end

  @impl true
  def create(resource, changeset) do
    with {:ok, record} <- Ash.Changeset.apply_attributes(changeset) do
      record = loaded(record, resource)
      pk = primary_key(resource, record)

      case DynamicSupervisor.start_child(@supervisor, {Server, {resource, pk, record}}) do
        {:ok, _pid} ->
          {:ok, record}

        {:error, :already_exists} ->
          {:error,
           Ash.Error.Changes.InvalidChanges.exception(
             fields: Map.keys(pk),
             message: "has already been taken"
           )}

        {:error, reason} ->
          {:error, reason}
      end
    end
  end

  @impl true
  def update(resource, changeset) do
    pk = primary_key(resource, changeset.data)

    case whereis(resource, pk) do
      nil ->
        {:error, Ash.Error.Changes.StaleRecord.exception(resource: resource)}

      pid ->
        with {:ok, record} <- Server.update(pid, changeset.attributes) do
          {:ok, loaded(record, resource)}
        end
    end
  end

  @impl true
  def destroy(resource, changeset) do
    case whereis(resource, primary_key(resource, changeset.data)) do
      nil -> {:error, Ash.Error.Changes.StaleRecord.exception(resource: resource)}
      pid -> DynamicSupervisor.terminate_child(@supervisor, pid)
    end
  end

  defp loaded(record, resource),
    do: %{record | __meta__: %Ecto.Schema.Metadata{state: :loaded, schema: resource}}

  defp primary_key(resource, record) do
    resource
    |> Ash.Resource.Info.primary_key()
    |> Map.new(&{&1, Map.get(record, &1)})
  end

  defp whereis(resource, pk) do
    case Registry.lookup(@registry, {resource, pk}) do
      [{pid, _}] -> pid
      [] -> nil
    end
  end

  defp servers(resource) do
    Registry.select(@registry, [{{{resource, :"$1"}, :"$2", :_}, [], [{{:"$1", :"$2"}}]}])
  end
end

defmodule Bench.InProcessDataLayer.Server do
  @moduledoc false
  # One record: registers itself under {resource, primary_key}, answers :get and
  # {:update, attributes}. A primary-key change re-registers it under the new key.
  use GenServer, restart: :transient

  def start_link(args), do: GenServer.start_link(__MODULE__, args)
  def get(pid), do: GenServer.call(pid, :get)
  def update(pid, attributes), do: GenServer.call(pid, {:update, attributes})

  @impl true
  def init({resource, pk, record}) do
    case Registry.register(Bench.InProcessDataLayer.registry(), {resource, pk}, nil) do
      {:ok, _} -> {:ok, %{resource: resource, pk: pk, record: record}}
      {:error, {:already_registered, _}} -> {:stop, :already_exists}
    end
  end

  @impl true
  def handle_call(:get, _from, state), do: {:reply, {:ok, state.record}, state}

  def handle_call({:update, attributes}, _from, state) do
    record = struct(state.record, attributes)

    new_pk =
      state.resource |> Ash.Resource.Info.primary_key() |> Map.new(&{&1, Map.get(record, &1)})

    if new_pk == state.pk do
      {:reply, {:ok, record}, %{state | record: record}}
    else
      registry = Bench.InProcessDataLayer.registry()

      case Registry.register(registry, {state.resource, new_pk}, nil) do
        {:ok, _} ->
          Registry.unregister(registry, {state.resource, state.pk})
          {:reply, {:ok, record}, %{state | record: record, pk: new_pk}}

        {:error, {:already_registered, _}} ->
          {:reply, {:error, :already_exists}, state}
      end
    end
  end
end
