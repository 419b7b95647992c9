defmodule AshGenServer.DataLayer.Requests do
  @moduledoc """
  Requests about a resource, from the data layer to the resource's node, and the mapping of the
  node's error replies to Ash errors. (Code without Ash uses `AshGenServer.Client` instead.)

  - `request/2` sends a request to the resource's node (its `node` in the DSL, else
    `config :ash_gen_server, nodes: [...]`, else `config :ash_gen_server, node: ...`) and
    returns the raw reply; `run/3` does the same and
    turns error replies into Ash errors (`to_ash_error/2`), which is what the data layer uses.
  - Every call goes through `AshGenServer.Transport.call/4`: an exit (node down, no server,
    timeout) becomes an `AshGenServer.Error.NodeUnavailable` naming the node, never an exit in
    the caller; with `nodes:` a call whose node is down fails over once to the next member
    (see `AshGenServer.Transport`, and `AshGenServer.Nodes` for which member is in use); and
    every call is a `:telemetry.span/3` named `[:ash_gen_server, :request]`
    (`[:ash_gen_server, :request, :start | :stop]`, with the metadata `node`, `resource`,
    `request`, `message` and, on stop, `reply`; see `AshGenServer.Transport`). Casts
    (`keep_alive`) emit nothing.
  - A resource is `define`d lazily, the first time it is used against a node; the fact is cached
    in `:persistent_term` under `{#{inspect(__MODULE__)}, :defined, node, resource}` (`node`
    being the list for `nodes:`: a cluster replicates definitions to all its members). If a request
    answers `{:error, {:unknown_resource, _}}` (the node restarted and lost its definitions) the
    resource is defined again and the request retried once.
  - Before a resource is first defined on a node, `AshGenServer.ExpiryHandler` is asked to
    subscribe to that resource's expiries there, so expiry notices reach Ash from the first
    record on.
  """

  alias AshGenServer.DataLayer.{Info, Layout}
  alias AshGenServer.Error.{NodeError, NodeUnavailable}
  alias AshGenServer.Transport

  @doc """
  Sends `request` about `resource` to the resource's node, defining the resource there first if
  needed. Returns the node's raw reply, or `{:error, exception}` when the node is unreachable
  or the definition fails. The call waits `timeout` ms (a read's own `:timeout`), else the
  resource's `AshGenServer.DataLayer.Info.call_timeout/1`.
  """
  @spec request(Ash.Resource.t(), term, timeout | nil) :: term
  def request(resource, request, timeout \\ nil) do
    with {:ok, node} <- node_for(resource),
         :ok <- ensure_defined(node, resource) do
      timeout = timeout || Info.call_timeout(resource)

      case Transport.call(node, request, timeout, resource) do
        {:error, {:unknown_resource, _}} ->
          forget(node, resource)

          with :ok <- ensure_defined(node, resource) do
            Transport.call(node, request, timeout, resource)
          end

        reply ->
          reply
      end
    end
  end

  @doc """
  Sends `request` about `resource` (as `request/2`) and returns `{:ok, body}` or
  `{:error, ash_error}`: the node's reply through `result/2`. What the data layer uses.

  `context` is `result/2`'s; its `:resource` defaults to `resource`, and its `:timeout` (ms or
  `:infinity`; a read's own `:timeout`) is the call's, instead of the resource's call timeout.
  """
  @spec run(Ash.Resource.t(), term, keyword) ::
          {:ok, term} | {:error, Exception.t() | [Exception.t()]}
  def run(resource, request, context \\ []) do
    context = Keyword.put_new(context, :resource, resource)
    resource |> request(request, context[:timeout]) |> result(context)
  end

  @doc """
  A node reply as `{:ok, body}` or `{:error, ash_error}` (`run/3` without the request; also
  used for the per-record replies of a `bulk_create`):

  - `{:ok, body}` is itself, `:ok` (`destroy`) is `{:ok, :ok}` and `{:ok, action, record}`
    (`upsert`) is `{:ok, {action, record}}`;
  - `{:error, reason}` is `{:error, to_ash_error(reason, context)}` (an unreachable node stays
    `AshGenServer.Error.NodeUnavailable`), and any other reply, or a body that fails
    `context[:expect]`, is `{:error, to_ash_error(reply, context)}`, an
    `AshGenServer.Error.NodeError`.

  `context` is `to_ash_error/2`'s, plus an optional `:expect`: a predicate the body must
  satisfy (`&is_list/1`...).
  """
  @spec result(term, keyword) :: {:ok, term} | {:error, Exception.t() | [Exception.t()]}
  def result(reply, context) do
    case reply do
      {:ok, body} -> expected(reply, body, context)
      :ok -> expected(reply, :ok, context)
      {:ok, action, record} -> expected(reply, {action, record}, context)
      {:error, reason} -> {:error, to_ash_error(reason, context)}
      other -> {:error, to_ash_error(other, context)}
    end
  end

  defp expected(reply, body, context) do
    expect = Keyword.get(context, :expect, fn _body -> true end)
    if expect.(body), do: {:ok, body}, else: {:error, to_ash_error(reply, context)}
  end

  @doc """
  What names `resource` in a request: `{resource, tenant}` (the tenant's namespace on the node)
  for a resource with the `:context` multitenancy strategy and a tenant, else `resource`.
  """
  @spec target(Ash.Resource.t(), term) :: Ash.Resource.t() | {Ash.Resource.t(), term}
  def target(resource, nil), do: resource

  def target(resource, tenant) do
    if Layout.get(resource).context_tenancy?, do: {resource, tenant}, else: resource
  end

  @doc "Sends a cast about `resource` to its node (no reply, no definition)."
  @spec cast(Ash.Resource.t(), term) :: :ok
  def cast(resource, request) do
    case node_for(resource) do
      {:ok, node} -> Transport.cast(node, request)
      _ -> :ok
    end
  end

  @doc "The node (or the list of a cluster's members) configured for `resource`."
  @spec node_for(Ash.Resource.t()) :: {:ok, node | [node]} | {:error, Exception.t()}
  def node_for(resource) do
    case Info.node(resource) do
      node when is_atom(node) and not is_nil(node) ->
        {:ok, node}

      [node | _] = nodes when is_atom(node) ->
        {:ok, nodes}

      _ ->
        {:error, NodeUnavailable.exception(node: nil, resource: resource, reason: :no_node)}
    end
  end

  @doc "Defines `resource` on `node` unless this VM already did (see the moduledoc)."
  @spec ensure_defined(node | [node], Ash.Resource.t()) :: :ok | {:error, Exception.t()}
  def ensure_defined(node, resource) do
    if :persistent_term.get({__MODULE__, :defined, node, resource}, false) do
      :ok
    else
      AshGenServer.ExpiryHandler.watch(node, resource)
      define(node, resource)
    end
  end

  @doc "Sends `{define, Resource, Opts}` to `node` and caches the success."
  @spec define(node | [node], Ash.Resource.t()) :: :ok | {:error, Exception.t()}
  def define(node, resource) do
    request = {:define, resource, Info.define_options(resource)}

    case Transport.call(node, request, Info.call_timeout(resource), resource) do
      :ok ->
        :persistent_term.put({__MODULE__, :defined, node, resource}, true)
        :ok

      {:error, %NodeUnavailable{}} = error ->
        error

      {:error, {:unavailable, _message} = reason} ->
        {:error, NodeUnavailable.exception(node: node, resource: resource, reason: reason)}

      {:error, reason} ->
        {:error,
         NodeError.exception(node: node, resource: resource, request: :define, reason: reason)}

      other ->
        {:error,
         NodeError.exception(node: node, resource: resource, request: :define, reason: other)}
    end
  end

  @doc "Forgets that `resource` is defined on `node` (so the next request defines it again)."
  @spec forget(node | [node], Ash.Resource.t()) :: :ok
  def forget(node, resource) do
    :persistent_term.erase({__MODULE__, :defined, node, resource})
    :ok
  end

  @doc """
  Turns a node error reply into an Ash error.

  `context` is a keyword list: `:resource`, `:request` (the request's name, for messages),
  `:timeout` (the call's, when not the resource's call timeout),
  `:filter` (the changeset filter, for stale-record errors) and `:not_found` (what `not_found`
  means here; `:stale` gives `Ash.Error.Changes.StaleRecord`, like `Ash.DataLayer.Ets` for an
  update of a missing record).
  """
  @spec to_ash_error(term, keyword) :: Exception.t() | [Exception.t()]
  def to_ash_error(reason, context) do
    resource = context[:resource]

    case reason do
      %NodeUnavailable{reason: :timeout} = unavailable ->
        Ash.Error.Invalid.Timeout.exception(
          name: Exception.message(unavailable),
          timeout: context[:timeout] || (resource && Info.call_timeout(resource))
        )

      %NodeUnavailable{} = unavailable ->
        Ash.Error.Invalid.Unavailable.exception(
          resource: resource || unavailable.resource,
          reason: Exception.message(unavailable)
        )

      %_{} = exception when is_exception(exception) ->
        exception

      # A cluster member that could not get the request served (no leader): unavailable, as
      # an unreachable node is.
      {:unavailable, message} when is_binary(message) ->
        NodeUnavailable.exception(
          node: resource && Info.node(resource),
          resource: resource,
          reason: reason
        )
        |> to_ash_error(context)

      :stale ->
        Ash.Error.Changes.StaleRecord.exception(resource: resource, filter: context[:filter])

      :not_found ->
        case context[:not_found] do
          :stale ->
            Ash.Error.Changes.StaleRecord.exception(resource: resource, filter: context[:filter])

          _ ->
            Ash.Error.Query.NotFound.exception(resource: resource)
        end

      {:already_exists, _pk} ->
        taken(resource, Ash.Resource.Info.primary_key(resource), nil)

      {:identity_conflict, name, values} ->
        identity = resource && Ash.Resource.Info.identity(resource, name)

        keys =
          cond do
            identity && identity.field_names not in [nil, []] -> identity.field_names
            identity -> identity.keys
            true -> Map.keys(values)
          end

        taken(resource, keys, identity && identity.message)

      {:missing_primary_key, fields} ->
        Ash.Error.Invalid.InvalidPrimaryKey.exception(resource: resource, value: fields)

      other ->
        NodeError.exception(
          node: resource && Info.node(resource),
          resource: resource,
          request: context[:request],
          reason: other
        )
    end
  end

  defp taken(_resource, [field], message) do
    Ash.Error.Changes.InvalidAttribute.exception(
      field: field,
      message: message || "has already been taken"
    )
  end

  # As ash_postgres reports a unique violation: one `InvalidAttribute` per field.
  defp taken(_resource, fields, message) do
    for field <- fields do
      Ash.Error.Changes.InvalidAttribute.exception(
        field: field,
        message: message || "has already been taken"
      )
    end
  end
end
