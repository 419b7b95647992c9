defmodule AshGenServer.ExpiryHandler do
  @moduledoc """
  Receives the node's expiry notices and destroys expired records through Ash.

  When a record's inactivity timeout or maximum lifetime passes, the node sends one process
  subscribed to the record's resource (PROTOCOL.md "Lifetimes")

      {:ash_gen_server, :expired, %{node: node, resource: resource, tenant: tenant,
                                     primary_key: pk, record: record, reason: reason}}

  and expects it to destroy the record.

  ## Subscriptions

  This process subscribes, on each node, to **the resources this VM has defined there** and no
  others (`{subscribe, [Resource]}`): several applications (several VMs) can share one node, and
  each gets the notices of its own resources only, so their destroy actions and hooks run
  where the resources are known. `AshGenServer.DataLayer.Requests` calls `watch/2` before it
  first defines a resource on a node; the handler then subscribes again with the longer list
  (subscribing again replaces the list on the node), synchronously, so notices for records
  created right after reach Ash. The handler itself talks to nodes through
  `AshGenServer.Transport` (raw calls to the node of the notice, no `define`), never through
  `AshGenServer.DataLayer.Requests`, which depends on it.

  The resources watched per node are kept in `:persistent_term`, so a restarted handler
  subscribes again at once, and the handler monitors all nodes
  (`:net_kernel.monitor_nodes(true, node_type: :all)`, the Rust node being hidden) to subscribe
  again, with the whole list, whenever a watched node reconnects (after a network failure or a
  restart of the node). A node too old to know `{subscribe, [Resource]}` gets a plain
  `subscribe` (every resource), with a warning.

  ## Destroying

  For each notice it starts a task (under `AshGenServer.TaskSupervisor`, so one slow destroy
  hook does not hold up the others) that rebuilds the Ash record and runs the resource's primary
  destroy action with `authorize?: false`, so the action's changes and hooks run. The changeset
  context holds `%{ash_gen_server: %{expired: reason}}`, so a change can tell an expiry from an
  ordinary destroy. If that fails (no primary destroy action, a hook error, a crash), the task
  falls back to a raw `{destroy, Resource, PK}` so the record goes away either way. A record of
  a resource without a primary key (which Ash cannot destroy) is destroyed raw at once, with no
  warning.

  The destroy runs for the record's tenant: with the `:context` multitenancy strategy the
  notice's `tenant` (the tenant's namespace on the node, `{Resource, Tenant}`, which the raw
  fallback destroys in too); with the `:attribute` strategy the tenant of the record's tenant
  attribute (the resource's `tenant_from_attribute`). The rebuilt record carries it in `__metadata__.tenant`, as records Ash reads do.
  """
  use GenServer
  require Logger

  alias AshGenServer.{Transport, Values}

  # %{node => MapSet of resources}: what this VM has defined on each node.
  @watched {__MODULE__, :watched}
  @subscribe_timeout 5_000

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc """
  Makes sure this VM's handler is subscribed to `resource`'s expiries on `node` (synchronously,
  so expiry notices for records created right after reach Ash). A no-op when the handler is not
  running.
  """
  @spec watch(node, Ash.Resource.t()) :: :ok
  def watch(node, resource) do
    case Process.whereis(__MODULE__) do
      nil ->
        :ok

      pid when pid == self() ->
        :ok

      _pid ->
        try do
          GenServer.call(__MODULE__, {:watch, node, resource}, @subscribe_timeout * 2)
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

  @doc """
  What this VM's handler is subscribed to right now, per node: the sorted list of resources
  sent in `{subscribe, [Resource]}`, or `:all` (a node that only knows plain `subscribe`).
  """
  @spec subscriptions() :: %{node => [Ash.Resource.t()] | :all}
  def subscriptions do
    GenServer.call(__MODULE__, :subscriptions)
  end

  @impl true
  def init(_opts) do
    :ok = :net_kernel.monitor_nodes(true, node_type: :all)
    {:ok, %{subscribed: %{}}, {:continue, :resubscribe}}
  end

  @impl true
  def handle_continue(:resubscribe, state) do
    state =
      watched()
      |> Map.keys()
      |> Enum.reduce(state, &subscribe/2)

    {:noreply, state}
  end

  @impl true
  def handle_call({:watch, node, resource}, _from, state) do
    watched = watched()
    resources = Map.get(watched, node, MapSet.new())

    unless MapSet.member?(resources, resource) do
      :persistent_term.put(@watched, Map.put(watched, node, MapSet.put(resources, resource)))
    end

    {:reply, :ok, subscribe(node, state)}
  end

  def handle_call(:subscribed_nodes, _from, state) do
    {:reply, Map.keys(state.subscribed), state}
  end

  def handle_call(:subscriptions, _from, state) do
    {:reply, state.subscribed, state}
  end

  @impl true
  def handle_info({:ash_gen_server, :expired, notice}, state) when is_map(notice) do
    Task.Supervisor.start_child(AshGenServer.TaskSupervisor, fn -> expire(notice) end)
    {:noreply, state}
  end

  def handle_info({:nodeup, node, _info}, state) do
    if Map.has_key?(watched(), node) do
      {:noreply, subscribe(node, %{state | subscribed: Map.delete(state.subscribed, node)})}
    else
      {:noreply, state}
    end
  end

  def handle_info({:nodedown, node, _info}, state) do
    {:noreply, %{state | subscribed: Map.delete(state.subscribed, node)}}
  end

  def handle_info(message, state) do
    Logger.debug("#{inspect(__MODULE__)} ignored #{inspect(message)}")
    {:noreply, state}
  end

  defp watched, do: :persistent_term.get(@watched, %{})

  # Subscribes to the resources watched on `node`, unless the node already has that list.
  defp subscribe(node, state) do
    resources = watched() |> Map.get(node, MapSet.new()) |> Enum.sort()

    case Map.get(state.subscribed, node) do
      ^resources ->
        state

      :all ->
        state

      _ ->
        case subscribe_request(node, resources) do
          {:ok, subscription} ->
            %{state | subscribed: Map.put(state.subscribed, node, subscription)}

          {:error, reason} ->
            Logger.debug(
              "ash_gen_server: could not subscribe to #{inspect(node)}: #{inspect(reason)}"
            )

            state
        end
    end
  end

  defp subscribe_request(node, resources) do
    case Transport.call(node, {:subscribe, resources}, @subscribe_timeout) do
      :ok ->
        {:ok, resources}

      {:error, {kind, _}} when kind in [:unknown_request, :bad_request] ->
        # a node from before per-resource subscriptions
        case Transport.call(node, :subscribe, @subscribe_timeout) do
          :ok ->
            Logger.warning(
              "ash_gen_server: #{inspect(node)} does not know per-resource expiry " <>
                "subscriptions; this VM now receives the expiry notices of every resource there"
            )

            {:ok, :all}

          other ->
            {:error, other}
        end

      other ->
        {:error, other}
    end
  end

  @doc false
  # Runs in a task: destroy the expired record through Ash, or raw if that is impossible.
  def expire(%{resource: resource, primary_key: pk} = notice) do
    case destroy_through_ash(notice) do
      :ok ->
        :ok

      # A resource without a primary key: Ash cannot destroy its records, the node can.
      :raw ->
        raw_destroy(notice)

      {:error, error} ->
        Logger.warning(
          "ash_gen_server: expiry of #{inspect(resource)} #{inspect(pk)} could not run the " <>
            "primary destroy action (#{format(error)}); removing the record directly"
        )

        raw_destroy(notice)
    end
  end

  defp raw_destroy(%{resource: resource, primary_key: pk, node: node} = notice) do
    case Transport.call(node, {:destroy, target(resource, Map.get(notice, :tenant)), pk}) do
      :ok -> :ok
      {:error, :not_found} -> :ok
      other -> Logger.warning("ash_gen_server: raw destroy failed: #{inspect(other)}")
    end
  end

  # The request target of a tenant's record (as `AshGenServer.DataLayer.Requests.target/2`,
  # which this module does not use): the notice's tenant is the node's, so it needs no resource
  # info.
  defp target(resource, nil), do: resource
  defp target(resource, tenant), do: {resource, tenant}

  defp destroy_through_ash(%{resource: resource, record: stored} = notice) do
    with true <- Code.ensure_loaded?(resource) and Ash.Resource.Info.resource?(resource),
         {:keyed, true} <- {:keyed, Ash.Resource.Info.primary_key(resource) != []},
         %{name: action} <- Ash.Resource.Info.primary_action(resource, :destroy),
         {:ok, record} <- Values.cast_record(resource, stored) do
      tenant = tenant(resource, Map.get(notice, :tenant), record)

      record
      |> Ash.Resource.put_metadata(:tenant, tenant)
      |> Ash.Changeset.for_destroy(action, %{},
        authorize?: false,
        tenant: tenant,
        context: %{ash_gen_server: %{expired: Map.get(notice, :reason)}}
      )
      |> Ash.destroy(authorize?: false, tenant: tenant)
      |> case do
        :ok -> :ok
        {:ok, _} -> :ok
        {:error, error} -> {:error, error}
      end
    else
      false -> {:error, "#{inspect(resource)} is not an Ash resource"}
      {:keyed, false} -> :raw
      nil -> {:error, "#{inspect(resource)} has no primary destroy action"}
      {:error, error} -> {:error, error}
    end
  rescue
    error -> {:error, error}
  catch
    kind, reason -> {:error, {kind, reason}}
  end

  # The tenant the destroy runs for: the notice's (`:context`), else the one the record's
  # tenant attribute belongs to (`:attribute`, through the resource's `tenant_from_attribute`),
  # else none.
  defp tenant(_resource, tenant, _record) when not is_nil(tenant), do: tenant

  defp tenant(resource, nil, record) do
    with :attribute <- Ash.Resource.Info.multitenancy_strategy(resource),
         value when not is_nil(value) <-
           Map.get(record, Ash.Resource.Info.multitenancy_attribute(resource)) do
      {m, f, a} = Ash.Resource.Info.multitenancy_tenant_from_attribute(resource)
      apply(m, f, [value | a])
    else
      _ -> nil
    end
  end

  defp format(error) when is_exception(error), do: Exception.message(error)
  defp format(error), do: inspect(error)
end
