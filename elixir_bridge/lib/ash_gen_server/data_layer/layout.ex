defmodule AshGenServer.DataLayer.Layout do
  @moduledoc """
  What `AshGenServer.DataLayer` needs about a resource on every request, worked out once when
  the resource compiles (by `AshGenServer.DataLayer.Layout.Persister`) instead of on every
  call: the DSL options read per request (`node`, `call_timeout`), and the attributes with
  what converting each one's values takes.

  - `attributes`: `{name, kind, attribute}` for every attribute, in the resource's order;
    `kind` is `plain_kind/1` of its type (`nil` when values go through
    `Ash.Type.dump_to_native/3` and `Ash.Type.cast_stored/3`).
  - `primary_key`: the same triples for the primary-key fields, in primary-key order.
  - `attribute_names`: the attribute names, in order.
  - `sensitive`: the names of the `sensitive?` attributes (left out of telemetry metadata).
  - `context_tenancy?`: whether the resource uses the `:context` multitenancy strategy (each
    tenant's records in their own namespace on the node, `{Resource, Tenant}`).
  - `atomics_in_node?`: the DSL option (see `AshGenServer.Atomics`).
  - `lateral_joins_in_node?`: the DSL option (see `AshGenServer.LateralJoin`).
  - `node`, `call_timeout`: the DSL options (`nil` when not set; the application environment
    fallbacks are read per request by `AshGenServer.DataLayer.Info`, since they may change at
    run time).

  The layout is a Spark persisted value, so it is rebuilt whenever the resource is recompiled.
  """

  alias Spark.Dsl.Extension

  @key :ash_gen_server_layout

  @type field :: {atom, plain_kind(), Ash.Resource.Attribute.t()}

  @type t :: %__MODULE__{
          node: node | nil,
          call_timeout: timeout | nil,
          attributes: [field],
          primary_key: [field],
          attribute_names: [atom],
          sensitive: [atom],
          context_tenancy?: boolean,
          atomics_in_node?: boolean,
          lateral_joins_in_node?: boolean
        }

  defstruct [
    :node,
    :call_timeout,
    attributes: [],
    primary_key: [],
    attribute_names: [],
    sensitive: [],
    context_tenancy?: false,
    atomics_in_node?: true,
    lateral_joins_in_node?: true
  ]

  @typedoc "See `plain_kind/1`."
  @type plain_kind :: :integer | :float | :string | :boolean | nil

  # Types whose `dump_to_native/3` and `cast_stored/3` return a value of this shape unchanged
  # (`Ecto.Type.dump/2` and `Ecto.Type.load/2` of the primitive type; a float's `cast_stored`
  # also turns an integer into a float, which is not this shape, so it still goes through Ash).
  @plain_kinds %{
    Ash.Type.Integer => :integer,
    Ash.Type.Float => :float,
    Ash.Type.String => :string,
    Ash.Type.Boolean => :boolean
  }

  @doc """
  For a type whose stored form is the value itself, the shape of such values: `:integer`,
  `:float` (a float), `:string` (a binary) or `:boolean`. A value of that shape (or `nil`) is
  stored and read back unchanged, with no call to `Ash.Type`. `nil` for every other type
  (only exactly these Ash types count, not `NewType`s of them).
  """
  @spec plain_kind(Ash.Type.t()) :: plain_kind
  def plain_kind(type), do: Map.get(@plain_kinds, type)

  @doc """
  The layout of `resource`: the one persisted when it compiled, else (a resource compiled
  without the persister, or a DSL state during compilation) built now.
  """
  @spec get(Ash.Resource.t() | Spark.Dsl.t()) :: t
  def get(resource) when is_atom(resource) do
    case Extension.get_persisted(resource, @key) do
      %__MODULE__{} = layout -> layout
      _ -> build(resource)
    end
  end

  def get(dsl_state), do: build(dsl_state)

  @doc "Builds the layout from a resource module or a DSL state."
  @spec build(Ash.Resource.t() | Spark.Dsl.t()) :: t
  def build(resource) do
    attributes =
      for attribute <- Ash.Resource.Info.attributes(resource),
          do: {attribute.name, plain_kind(attribute.type), attribute}

    by_name = Map.new(attributes, fn {name, _, _} = field -> {name, field} end)

    %__MODULE__{
      node: Extension.get_opt(resource, [:gen_server], :node, nil),
      call_timeout: Extension.get_opt(resource, [:gen_server], :call_timeout, nil),
      attributes: attributes,
      primary_key:
        for(name <- Ash.Resource.Info.primary_key(resource), do: Map.fetch!(by_name, name)),
      attribute_names: Enum.map(attributes, &elem(&1, 0)),
      sensitive: for({name, _, %{sensitive?: true}} <- attributes, do: name),
      context_tenancy?: Ash.Resource.Info.multitenancy_strategy(resource) == :context,
      atomics_in_node?: Extension.get_opt(resource, [:gen_server], :atomics_in_node?, true),
      lateral_joins_in_node?:
        Extension.get_opt(resource, [:gen_server], :lateral_joins_in_node?, true)
    }
  end

  defmodule Persister do
    @moduledoc false
    # Persists `AshGenServer.DataLayer.Layout.build/1` of the final DSL state, after every
    # transformer and persister that adds or changes attributes.
    use Spark.Dsl.Transformer

    @impl true
    def after?(_), do: true

    @impl true
    def transform(dsl_state) do
      layout = AshGenServer.DataLayer.Layout.build(dsl_state)
      {:ok, Spark.Dsl.Transformer.persist(dsl_state, :ash_gen_server_layout, layout)}
    end
  end
end
