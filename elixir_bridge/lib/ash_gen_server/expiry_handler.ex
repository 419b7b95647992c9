defmodule AshGenServer.ExpiryHandler do
  @moduledoc """
  Receives the node's expiry notices and destroys expired records through Ash.

  When a record's inactivity timeout or maximum lifetime passes, the node sends one subscribed
  process (PROTOCOL.md "Lifetimes")

      {:ash_gen_server, :expired, %{node: node, resource: resource, primary_key: pk,
                                     record: record, reason: reason}}

  and expects it to destroy the record. This process subscribes to every node the shim talks to
  (`watch/1`, called by `AshGenServer.Client` before it first defines a resource on a node), and
  subscribes again whenever such a node reconnects: it monitors all nodes with
  `:net_kernel.monitor_nodes(true, node_type: :all)` because the Rust node is hidden. The set of
  watched nodes is kept in `:persistent_term`, so a restarted handler subscribes again at once.

  For each notice it starts a task (under `AshGenServer.TaskSupervisor`, so one slow destroy
  hook does not hold up the others) that rebuilds the Ash record and runs the resource's primary
  destroy action with `authorize?: false`, so the action's changes and hooks run. The changeset
  context holds `%{ash_gen_server: %{expired: reason}}`, so a change can tell an expiry from an
  ordinary destroy. If that fails (no primary destroy action, a hook error, a crash), the task
  falls back to a raw `{destroy, Resource, PK}` so the record goes away either way.
  """
  use GenServer
  require Logger

  alias AshGenServer.{Client, Values}

  @watched {__MODULE__, :watched}
  @subscribe_timeout 5_000

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc """
  Makes sure this VM's handler is subscribed to `node` (synchronously, so expiry notices for
  records created right after reach Ash). A no-op when the handler is not running.
  """
  @spec watch(node) :: :ok
  def watch(node) do
    case Process.whereis(__MODULE__) do
      nil ->
        :ok

      pid when pid == self() ->
        :ok

      _pid ->
        try do
          GenServer.call(__MODULE__, {:watch, node}, @subscribe_timeout * 2)
        catch
          :exit, _ -> :ok
        end
    end
  end

  @doc "The nodes this VM's handler is subscribed to right now."
  @spec subscribed_nodes() :: [node]
  def subscribed_nodes do
    GenServer.call(__MODULE__, :subscribed_nodes)
  end

  @impl true
  def init(_opts) do
    :ok = :net_kernel.monitor_nodes(true, node_type: :all)
    {:ok, %{subscribed: MapSet.new()}, {:continue, :resubscribe}}
  end

  @impl true
  def handle_continue(:resubscribe, state) do
    state =
      @watched
      |> :persistent_term.get(MapSet.new())
      |> Enum.reduce(state, &subscribe/2)

    {:noreply, state}
  end

  @impl true
  def handle_call({:watch, node}, _from, state) do
    watched = :persistent_term.get(@watched, MapSet.new())

    unless MapSet.member?(watched, node) do
      :persistent_term.put(@watched, MapSet.put(watched, node))
    end

    {:reply, :ok, subscribe(node, state)}
  end

  def handle_call(:subscribed_nodes, _from, state) do
    {:reply, MapSet.to_list(state.subscribed), state}
  end

  @impl true
  def handle_info({:ash_gen_server, :expired, notice}, state) when is_map(notice) do
    Task.Supervisor.start_child(AshGenServer.TaskSupervisor, fn -> expire(notice) end)
    {:noreply, state}
  end

  def handle_info({:nodeup, node, _info}, state) do
    if MapSet.member?(:persistent_term.get(@watched, MapSet.new()), node) do
      {:noreply, subscribe(node, %{state | subscribed: MapSet.delete(state.subscribed, node)})}
    else
      {:noreply, state}
    end
  end

  def handle_info({:nodedown, node, _info}, state) do
    {:noreply, %{state | subscribed: MapSet.delete(state.subscribed, node)}}
  end

  def handle_info(message, state) do
    Logger.debug("#{inspect(__MODULE__)} ignored #{inspect(message)}")
    {:noreply, state}
  end

  defp subscribe(node, state) do
    if MapSet.member?(state.subscribed, node) do
      state
    else
      case Client.call(node, :subscribe, @subscribe_timeout) do
        :ok ->
          %{state | subscribed: MapSet.put(state.subscribed, node)}

        other ->
          Logger.debug(
            "ash_gen_server: could not subscribe to #{inspect(node)}: #{inspect(other)}"
          )

          state
      end
    end
  end

  @doc false
  # Runs in a task: destroy the expired record through Ash, or raw if that is impossible.
  def expire(%{resource: resource, primary_key: pk, node: node} = notice) do
    case destroy_through_ash(notice) do
      :ok ->
        :ok

      {:error, error} ->
        Logger.warning(
          "ash_gen_server: expiry of #{inspect(resource)} #{inspect(pk)} could not run the " <>
            "primary destroy action (#{format(error)}); removing the record directly"
        )

        case Client.call(node, {:destroy, resource, pk}) do
          :ok -> :ok
          {:error, :not_found} -> :ok
          other -> Logger.warning("ash_gen_server: raw destroy failed: #{inspect(other)}")
        end
    end
  end

  defp destroy_through_ash(%{resource: resource, record: stored} = notice) do
    with true <- Code.ensure_loaded?(resource) and Ash.Resource.Info.resource?(resource),
         %{name: action} <- Ash.Resource.Info.primary_action(resource, :destroy),
         {:ok, record} <- Values.cast_record(resource, stored) do
      record
      |> Ash.Changeset.for_destroy(action, %{},
        authorize?: false,
        context: %{ash_gen_server: %{expired: Map.get(notice, :reason)}}
      )
      |> Ash.destroy(authorize?: false)
      |> case do
        :ok -> :ok
        {:ok, _} -> :ok
        {:error, error} -> {:error, error}
      end
    else
      false -> {:error, "#{inspect(resource)} is not an Ash resource"}
      nil -> {:error, "#{inspect(resource)} has no primary destroy action"}
      {:error, error} -> {:error, error}
    end
  rescue
    error -> {:error, error}
  catch
    kind, reason -> {:error, {kind, reason}}
  end

  defp format(error) when is_exception(error), do: Exception.message(error)
  defp format(error), do: inspect(error)
end
