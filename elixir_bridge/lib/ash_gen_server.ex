defmodule AshGenServer do
  @moduledoc """
  Public helpers around records stored by `AshGenServer.DataLayer` on a Rust node.

  - `keep_alive/1` resets a record's inactivity timer without reading it.
  - `whereis/1` returns the pid of the record's actor on the node, which can be monitored or
    linked like any process.

  Both find a `:context` multitenant record in its tenant's namespace on the node from the
  tenant Ash keeps in the record's `__metadata__` (set on every record Ash reads or writes
  with a tenant).
  - `request/2` sends any PROTOCOL.md request about a resource to its node (defining the
    resource first if needed), for what Ash has no API for (`info`, `clear`, fault injection in
    tests...).
  """

  alias AshGenServer.DataLayer.Requests
  alias AshGenServer.Values

  @doc """
  Resets the inactivity timer of `record` on its node (a `{keep_alive, Resource, PK}` cast).
  Always returns `:ok`; a record that no longer exists is ignored by the node.
  """
  @spec keep_alive(Ash.Resource.record()) :: :ok
  def keep_alive(%resource{} = record) do
    case Values.primary_key(resource, record) do
      {:ok, pk} -> Requests.cast(resource, {:keep_alive, target(record), pk})
      _ -> :ok
    end
  end

  @doc "The pid of the record's actor on the node: `{:ok, pid}` or `{:error, reason}`."
  @spec whereis(Ash.Resource.record()) :: {:ok, pid} | {:error, term}
  def whereis(%resource{} = record) do
    with {:ok, pk} <- Values.primary_key(resource, record) do
      Requests.run(resource, {:whereis, target(record), pk}, request: :whereis, expect: &is_pid/1)
    end
  end

  defp target(%resource{} = record) do
    case record.__metadata__[:tenant] do
      nil -> resource
      tenant -> Requests.target(resource, Ash.ToTenant.to_tenant(tenant, resource))
    end
  end

  @doc """
  The primary key of a record as stored on the node (what `{get, Resource, PK}` and the other
  requests take).
  """
  @spec stored_primary_key(Ash.Resource.record()) :: {:ok, map} | {:error, term}
  def stored_primary_key(%resource{} = record), do: Values.primary_key(resource, record)

  @doc """
  Sends a raw PROTOCOL.md request about `resource` to its node and returns the raw reply
  (`{:error, %AshGenServer.Error.NodeUnavailable{}}` if the node cannot be reached).
  """
  @spec request(Ash.Resource.t(), term) :: term
  def request(resource, request), do: Requests.request(resource, request)
end
