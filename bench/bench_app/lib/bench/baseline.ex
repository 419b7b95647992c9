defmodule Bench.Baseline do
  @moduledoc """
  The baseline: records kept the way the original `ash_gen_server` library keeps them, on a
  plain BEAM node. One `GenServer` per record (`Bench.Baseline.Record`), registered in a unique
  `Registry` under `{resource, primary_key}` by the record process itself, started under a
  `DynamicSupervisor` (restart `:transient`).

  This module uses no Ash: the baseline node loads only this application's beam files and runs
  `main/0`. The driver node talks to it with remote `GenServer.call`s (to the supervisor and to
  record pids) and `:erpc` (scans, pid look-ups, memory).
  """

  @registry Bench.Baseline.Registry
  @supervisor Bench.Baseline.Supervisor

  def registry, do: @registry
  def supervisor, do: @supervisor

  @doc "Entry point of the baseline node: starts the tree, prints `ready`, waits for `:stop`."
  def main do
    {:ok, root} =
      Supervisor.start_link(
        [
          {Registry, keys: :unique, name: @registry},
          {DynamicSupervisor, strategy: :one_for_one, name: @supervisor}
        ],
        strategy: :one_for_one,
        name: Bench.Baseline.Root
      )

    Process.register(self(), Bench.Baseline.Main)
    IO.puts("ready #{node()}")

    receive do
      :stop -> Supervisor.stop(root)
    end
  end

  @doc "The child spec the driver passes to `DynamicSupervisor.start_child/2` (remote create)."
  def child_spec_for(resource, primary_key, record),
    do: {Bench.Baseline.Record, {resource, primary_key, record}}

  @doc "Creates a record locally (used to load data sets quickly; not timed)."
  def create_local(resource, primary_key, record) do
    DynamicSupervisor.start_child(@supervisor, child_spec_for(resource, primary_key, record))
  end

  @doc "Creates `records` (maps with `:id`) locally, one child each; returns how many started."
  def load(resource, records) do
    Enum.count(records, fn record ->
      match?({:ok, _}, create_local(resource, %{id: record.id}, record))
    end)
  end

  @doc "Creates the records with ids `first..last` (`Bench.Data.person/1`) locally; not timed."
  def load_range(resource, first, last) do
    Enum.count(first..last, fn i ->
      match?({:ok, _}, create_local(resource, %{id: i}, Bench.Data.person(i)))
    end)
  end

  @doc "The pid of the record with that primary key, or nil."
  def whereis(resource, primary_key) do
    case Registry.lookup(@registry, {resource, primary_key}) do
      [{pid, _}] -> pid
      [] -> nil
    end
  end

  @doc "The pids of the records with these integer ids, in order."
  def pids(resource, ids), do: Enum.map(ids, &whereis(resource, %{id: &1}))

  @doc "Every `{primary_key, pid}` of the resource (as the original's Registry.select)."
  def servers(resource) do
    Registry.select(@registry, [{{{resource, :"$1"}, :"$2", :_}, [], [{{:"$1", :"$2"}}]}])
  end

  @doc """
  The original's non-primary-key read, run on this node: every record server of the resource is
  called for its record, one at a time, and the records are filtered in the caller. `filter` is
  data (`{:age_gt_team_eq, age, team}`), so no closure crosses nodes. Returns
  `{microseconds, matches}`, timed here.
  """
  def scan(resource, {:age_gt_team_eq, age, team}) do
    started = System.monotonic_time()

    matches =
      resource
      |> servers()
      |> Enum.reduce([], fn {_pk, pid}, acc ->
        case GenServer.call(pid, :get) do
          {:ok, %{age: a, team: ^team} = record} when is_integer(a) and a > age -> [record | acc]
          _ -> acc
        end
      end)

    elapsed = System.convert_time_unit(System.monotonic_time() - started, :native, :microsecond)
    {elapsed, matches}
  end

  @doc "Stops every record of the resource (by the supervisor)."
  def clear(resource) do
    for {_pk, pid} <- servers(resource) do
      DynamicSupervisor.terminate_child(@supervisor, pid)
    end

    :ok
  end

  @doc "Number of live records of the resource."
  def count(resource), do: length(servers(resource))

  @doc """
  `:erlang.memory(:total)` after a garbage collection of every process, so that what is left is
  live data (idle record servers keep their minimum heap).
  """
  def memory do
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)
    :erlang.memory(:total)
  end
end

defmodule Bench.Baseline.Record do
  @moduledoc """
  One record's server, as in the original library: registers itself under
  `{resource, primary_key}` in `init/1`, holds the record (and its lifetime settings, here
  `:infinity`) in its state, answers `:get` and `{:update, changes}`.
  """
  use GenServer, restart: :transient

  defstruct [:resource, :primary_key, :record, :inactivity_timeout, :maximum_lifetime, :timer]

  def start_link(args), do: GenServer.start_link(__MODULE__, args)

  @impl true
  def init({resource, primary_key, record}) do
    case Registry.register(Bench.Baseline.registry(), {resource, primary_key}, nil) do
      {:ok, _owner} ->
        {:ok,
         %__MODULE__{
           resource: resource,
           primary_key: primary_key,
           record: record,
           inactivity_timeout: :infinity,
           maximum_lifetime: :infinity
         }}

      {:error, {:already_registered, _pid}} ->
        {:stop, :already_exists}
    end
  end

  @impl true
  def handle_call(:get, _from, state), do: {:reply, {:ok, state.record}, state}

  def handle_call({:update, changes}, _from, state) do
    record = Map.merge(state.record, changes)
    {:reply, {:ok, record}, %{state | record: record}}
  end
end
