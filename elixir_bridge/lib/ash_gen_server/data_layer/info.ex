defmodule AshGenServer.DataLayer.Info do
  @moduledoc """
  Reads the `gen_server` DSL section of a resource, and resolves the settings that may also come
  from the application environment (`config :ash_gen_server, node: ..., call_timeout: ...`).

  `node/1` and `call_timeout/1`, read on every request, take the DSL value from the resource's
  `AshGenServer.DataLayer.Layout` (worked out when it compiled) and only the application
  environment at run time.
  """
  alias AshGenServer.DataLayer.Layout
  alias Spark.Dsl.Extension

  @default_call_timeout 5_000

  @doc "How long a record may stay untouched before it expires (ms or `:infinity`)."
  @spec inactivity_timeout(Ash.Resource.t() | Spark.Dsl.t()) :: timeout
  def inactivity_timeout(resource),
    do: Extension.get_opt(resource, [:gen_server], :inactivity_timeout, :infinity)

  @doc "How long a record may live after its creation (ms or `:infinity`)."
  @spec maximum_lifetime(Ash.Resource.t() | Spark.Dsl.t()) :: timeout
  def maximum_lifetime(resource),
    do: Extension.get_opt(resource, [:gen_server], :maximum_lifetime, :infinity)

  @doc """
  The node holding the resource's records: the DSL `node`, else
  `Application.get_env(:ash_gen_server, :node)`, else `nil`.
  """
  @spec node(Ash.Resource.t()) :: node() | nil
  def node(resource) do
    Layout.get(resource).node || Application.get_env(:ash_gen_server, :node)
  end

  @doc """
  The timeout of each call to the node: the DSL `call_timeout`, else
  `Application.get_env(:ash_gen_server, :call_timeout)`, else #{@default_call_timeout} ms.
  """
  @spec call_timeout(Ash.Resource.t()) :: timeout
  def call_timeout(resource) do
    Layout.get(resource).call_timeout ||
      Application.get_env(:ash_gen_server, :call_timeout, @default_call_timeout)
  end

  @doc "The options sent to the node in the `define` request (see PROTOCOL.md)."
  @spec define_options(Ash.Resource.t()) :: map
  def define_options(resource) do
    base = %{
      primary_key: node_primary_key(resource),
      inactivity_timeout: inactivity_timeout(resource),
      maximum_lifetime: maximum_lifetime(resource),
      identities: node_identities(resource),
      types: node_types(resource)
    }

    [:max_restarts, :max_seconds, :expiry_grace]
    |> Enum.reduce(base, fn key, acc ->
      case Extension.get_opt(resource, [:gen_server], key, nil) do
        nil -> acc
        value -> Map.put(acc, key, value)
      end
    end)
  end

  @doc """
  The `primary_key` of `define`: the resource's, or `[AshGenServer.Values.hidden_key()]` for a
  resource without one.
  """
  @spec node_primary_key(Ash.Resource.t()) :: [atom]
  def node_primary_key(resource) do
    case Ash.Resource.Info.primary_key(resource) do
      [] -> [AshGenServer.Values.hidden_key()]
      primary_key -> primary_key
    end
  end

  @doc """
  The `types` of `define`: how the node compares the values of the attributes whose stored form
  it orders by value (dates, times, datetimes, decimals, ci_strings; see
  `AshGenServer.Values.node_type/1`).
  """
  @spec node_types(Ash.Resource.t()) :: %{atom => atom}
  def node_types(resource) do
    for attribute <- Ash.Resource.Info.attributes(resource),
        type = AshGenServer.Values.node_type(attribute.type),
        into: %{},
        do: {attribute.name, type}
  end

  @doc """
  The identities the node enforces: every identity whose keys are all attributes, as
  `{Name, Keys, \#{where => Expr, nils_distinct => boolean}}` (a `where` the node cannot
  evaluate exactly leaves the identity to Ash's `pre_check?`, see `node_where/2`). With
  the `:attribute` multitenancy strategy, an identity that is not `all_tenants?` includes the
  tenant attribute (the same value may be used once per tenant), as Ash's upsert keys do.
  """
  @spec node_identities(Ash.Resource.t()) :: [{atom, [atom]} | {atom, [atom], map}]
  def node_identities(resource) do
    for identity <- Ash.Resource.Info.identities(resource),
        Enum.all?(identity.keys, &Ash.Resource.Info.attribute(resource, &1)),
        {:ok, where} <- [node_where(resource, identity)] do
      keys = identity_keys(resource, identity)
      nils_distinct? = Map.get(identity, :nils_distinct?, true)

      case {where, nils_distinct?} do
        {nil, true} -> {identity.name, keys}
        {nil, false} -> {identity.name, keys, %{nils_distinct: false}}
        {where, _} -> {identity.name, keys, %{where: where, nils_distinct: nils_distinct?}}
      end
    end
  end

  @doc """
  An identity's `where` as the node evaluates it: `{:ok, nil}` (no `where`), `{:ok, expr}`
  (a filter the node evaluates exactly) or `:error` (one it cannot: the identity is left to
  Ash's `pre_check?`, and without it the resource does not compile, see
  `AshGenServer.DataLayer.Verifiers`).
  """
  @spec node_where(Ash.Resource.t(), Ash.Resource.Identity.t()) :: {:ok, term} | :error
  def node_where(_resource, %{where: nil}), do: {:ok, nil}

  def node_where(resource, %{where: where}) do
    with {:ok, filter} <- Ash.Filter.parse(resource, where),
         %{exact?: true, expr: expr} <- AshGenServer.Filter.translate(filter, resource) do
      {:ok, expr}
    else
      _ -> :error
    end
  rescue
    _ -> :error
  end

  @doc "An identity's keys as the node enforces them (see `node_identities/1`)."
  @spec identity_keys(Ash.Resource.t(), Ash.Resource.Identity.t()) :: [atom]
  def identity_keys(resource, identity) do
    if Ash.Resource.Info.multitenancy_strategy(resource) == :attribute and
         not identity.all_tenants? do
      Enum.uniq([Ash.Resource.Info.multitenancy_attribute(resource) | identity.keys])
    else
      identity.keys
    end
  end
end
