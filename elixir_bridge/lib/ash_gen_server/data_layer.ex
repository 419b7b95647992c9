defmodule AshGenServer.DataLayer do
  @gen_server %Spark.Dsl.Section{
    name: :gen_server,
    describe: """
    Where and how long this resource's records live on the Rust `ash_gen_server` node.
    """,
    examples: [
      """
      gen_server do
        inactivity_timeout :timer.minutes(5)
        maximum_lifetime :timer.hours(1)
        node :"rust@127.0.0.1"
      end
      """
    ],
    schema: [
      inactivity_timeout: [
        type: :timeout,
        default: :infinity,
        doc:
          "How long (ms) a record may go untouched before it expires and is destroyed. Defaults to `:infinity`."
      ],
      maximum_lifetime: [
        type: :timeout,
        default: :infinity,
        doc:
          "How long (ms) a record may live after its creation before it expires and is destroyed. Defaults to `:infinity`."
      ],
      node: [
        type: :atom,
        doc:
          "The node holding the records, e.g. `:\"rust@127.0.0.1\"`. Defaults to `config :ash_gen_server, nodes: [...]` (the members of a cluster, with failover), else `config :ash_gen_server, node: ...`."
      ],
      call_timeout: [
        type: :timeout,
        doc:
          "Timeout (ms) of each call to the node. Defaults to `config :ash_gen_server, call_timeout: ...`, else 5000."
      ],
      max_restarts: [
        type: :non_neg_integer,
        doc:
          "Restart intensity of each record's supervisor on the node: failures allowed within `max_seconds` (node default 3)."
      ],
      max_seconds: [
        type: :pos_integer,
        doc: "The window of `max_restarts`, in seconds (node default 5)."
      ],
      atomics_in_node?: [
        type: :boolean,
        default: true,
        doc:
          "Evaluate atomic updates (`atomic_update`, `atomic_set`, updates by query) in the record's actor when the node can. `false` always uses the shim's compare-and-set loop instead (read, evaluate with Ash, update guarded by the values read, retry)."
      ],
      expiry_grace: [
        type: :non_neg_integer,
        doc:
          "How long (ms) the node waits for the expiry handler to destroy an expired record before removing it itself (node default 5000)."
      ]
    ]
  }

  @moduledoc """
  An Ash data layer whose records live on a Rust node of the BEAM cluster, one actor per
  record: the Ash 3 counterpart of the `ash_gen_server` library.

      defmodule MyApp.Session do
        use Ash.Resource, domain: MyApp.Domain, data_layer: AshGenServer.DataLayer

        gen_server do
          inactivity_timeout :timer.minutes(5)   # default :infinity
          maximum_lifetime :timer.hours(1)       # default :infinity
          node :"rust@127.0.0.1"                 # else config :ash_gen_server, node: ...
        end
        ...
      end

  The node speaks `docs/PROTOCOL.md`; this module implements `Ash.DataLayer` on top of it:

  - reads translate the filter and sort for the node where it evaluates them exactly and let
    Ash evaluate the rest (`AshGenServer.Query`, `AshGenServer.Filter`); a filter on the whole
    primary key is a single `get`;
  - values are stored in their native (dumped) form (`AshGenServer.Values`);
  - creates, updates and destroys are single requests (`AshGenServer.Write`); an update or
    destroy carrying a `changeset.filter` (optimistic locking, atomic conditions) sends it as
    the request's `filter`, checked atomically by the record's actor, and `{error, stale}`
    becomes `Ash.Error.Changes.StaleRecord`;
  - upserts (by primary key or identity) are atomic `upsert` requests (`AshGenServer.Upsert`);
    identities (with `nils_distinct?: false`, or a `where` the node evaluates exactly) are
    enforced by the node;
  - atomic updates (`atomic_update`, updates and destroys by query) are evaluated in the
    record's actor where the node can, else by a compare-and-set loop (`AshGenServer.Atomics`,
    DSL `atomics_in_node?`); Ash runs a single atomic update as an update by primary key, one
    `update_where`;
  - atomics on create (`atomic_set`) are evaluated against the record being created;
  - combination queries (`Ash.Query.combination_of/2`) combine their combinations' records in
    Elixir (`AshGenServer.Combination`);
  - resources without a primary key are keyed on the node by a hidden generated key;
  - multitenancy: `:context` (each tenant's namespace on the node) and `:attribute`;
  - aggregates are computed by the node where it can (`AshGenServer.Aggregates`);
  - relationships loaded with a page or a limit, or filtered on `parent(...)`, are loaded per
    parent (lateral joins, `AshGenServer.LateralJoin`): every parent's page from one
    partitioned `query` where the node can;
  - expired records are destroyed through the primary destroy action, for their tenant
    (`AshGenServer.ExpiryHandler`).

  There are no transactions (`can?(_, :transact)` is false, as for `Ash.DataLayer.Ets`); Ash's
  before/after action hooks still run in order.

  Known limits: an identity whose `where` the node cannot evaluate exactly does not compile
  unless it sets `pre_check?` (`AshGenServer.DataLayer.Verifiers`). With Elixir 1.14, Ash's
  date arithmetic expressions (`ago`, `from_now`, `date_add`...), `Duration`, Reactor-backed
  actions and `Ash.Info.defined_extensions/1` do not work; that is Ash on Elixir 1.14, not this
  data layer.

  ## DSL

  #{Spark.Options.docs(@gen_server.schema)}
  """

  use Spark.Dsl.Extension,
    sections: [@gen_server],
    transformers: [AshGenServer.DataLayer.ReadTimeout.Transformer],
    persisters: [AshGenServer.DataLayer.Layout.Persister],
    verifiers: [
      AshGenServer.DataLayer.Verifiers.Identities,
      AshGenServer.DataLayer.Verifiers.IdentityWhere
    ]

  # The `node` option shares its name with `Kernel.node/1`, which every module imports, and
  # Spark only resolves import conflicts with non-Kernel modules. So the `gen_server` section
  # macro Spark generated above is wrapped to un-import `Kernel.node/1` inside the section.
  defoverridable gen_server: 1

  @doc false
  defmacro gen_server(body) do
    body =
      Keyword.update(body, :do, nil, fn block ->
        quote do
          import Kernel, except: [node: 1]
          unquote(block)
        end
      end)

    super(body)
  end

  @behaviour Ash.DataLayer

  alias AshGenServer.{Aggregates, Atomics, LateralJoin, Query, Upsert, Write}

  # -- capabilities ---------------------------------------------------------------------------

  @doc false
  @impl true
  def can?(_, :create), do: true
  def can?(_, :read), do: true
  def can?(resource, :update), do: Ash.Resource.Info.primary_key(resource) != []
  def can?(resource, :destroy), do: Ash.Resource.Info.primary_key(resource) != []
  def can?(resource, :update_query), do: can?(resource, :update)
  def can?(resource, :destroy_query), do: can?(resource, :destroy)
  def can?(_, {:atomic, :update}), do: true
  def can?(_, {:atomic, :upsert}), do: true
  def can?(_, {:atomic, :create}), do: true
  def can?(_, :expr_error), do: true
  def can?(_, :select), do: true
  def can?(_, :bulk_upsert_return_skipped), do: true
  def can?(_, :timeout), do: true
  def can?(_, :multitenancy), do: true
  def can?(_, {:aggregate, :unrelated}), do: true
  def can?(_, {:exists, :unrelated}), do: true
  def can?(_, :filter), do: true
  def can?(_, :boolean_filter), do: true
  def can?(_, :nested_expressions), do: true
  def can?(_, {:filter_expr, _}), do: true
  def can?(_, :sort), do: true
  def can?(_, {:sort, _}), do: true
  def can?(_, :offset), do: true
  def can?(_, :limit), do: true
  def can?(_, :composite_primary_key), do: true
  def can?(_, :upsert), do: true
  def can?(_, :bulk_create), do: true
  def can?(_, :changeset_filter), do: true
  def can?(_, :async_engine), do: true
  def can?(_, {:join, _}), do: true
  def can?(_, {:lateral_join, resources}), do: LateralJoin.supported?(resources, __MODULE__)
  def can?(_, :through_relationship), do: true
  def can?(_, {:filter_relationship, _}), do: true
  def can?(_, {:aggregate_relationship, _}), do: true
  def can?(_, {:aggregate, kind}), do: Aggregates.kind?(kind)
  def can?(_, {:query_aggregate, kind}), do: Aggregates.kind?(kind)
  def can?(_, :distinct), do: true
  def can?(_, :distinct_sort), do: true
  def can?(_, :expression_calculation), do: true
  def can?(_, :expression_calculation_sort), do: true
  def can?(_, :aggregate_filter), do: true
  def can?(_, :aggregate_sort), do: true
  def can?(_, :combine), do: true
  def can?(_, {:combine, _type}), do: true
  def can?(_, :transact), do: false
  def can?(_, _), do: false

  # -- query building -------------------------------------------------------------------------

  @doc false
  @impl true
  def resource_to_query(resource, domain), do: %Query{resource: resource, domain: domain}

  @doc false
  @impl true
  def filter(%Query{filter: nil} = query, filter, _resource), do: {:ok, %{query | filter: filter}}

  def filter(%Query{} = query, filter, _resource) do
    with {:ok, filter} <- Ash.Filter.add_to_filter(query.filter, filter) do
      {:ok, %{query | filter: filter}}
    end
  end

  @doc false
  @impl true
  def sort(query, sort, _resource), do: {:ok, %{query | sort: sort}}

  @doc false
  @impl true
  def select(query, select, _resource), do: {:ok, %{query | select: select}}

  @doc false
  @impl true
  def distinct(query, distinct, _resource), do: {:ok, %{query | distinct: distinct}}

  @doc false
  @impl true
  def distinct_sort(query, distinct_sort, _resource),
    do: {:ok, %{query | distinct_sort: distinct_sort}}

  @doc false
  @impl true
  def limit(query, limit, _resource), do: {:ok, %{query | limit: limit}}

  @doc false
  @impl true
  def offset(query, offset, _resource), do: {:ok, %{query | offset: offset}}

  @doc false
  @impl true
  def combination_of(combinations, resource, domain),
    do: {:ok, %Query{combination_of: combinations, resource: resource, domain: domain}}

  @doc false
  @impl true
  def set_context(_resource, query, context),
    do: {:ok, %{query | context: context, timeout: Query.read_timeout(context)}}

  @doc false
  @impl true
  def set_tenant(_resource, query, tenant), do: {:ok, %{query | tenant: tenant}}

  @doc false
  @impl true
  def add_aggregate(query, aggregate, resource), do: add_aggregates(query, [aggregate], resource)

  # Ash may hand the same aggregates (and calculations) to the query twice, once while building
  # it and once before running it: keep one of each name.
  @doc false
  @impl true
  def add_aggregates(query, aggregates, _resource),
    do: {:ok, %{query | aggregates: merge_by_name(query.aggregates, aggregates, & &1)}}

  @doc false
  @impl true
  def add_calculations(query, calculations, _resource),
    do:
      {:ok,
       %{query | calculations: merge_by_name(query.calculations, calculations, &elem(&1, 0))}}

  defp merge_by_name(existing, new, get) do
    key = fn item -> {get.(item).name, get.(item).load} end
    new_keys = MapSet.new(new, key)
    Enum.reject(existing, &MapSet.member?(new_keys, key.(&1))) ++ new
  end

  @doc false
  @impl true
  def in_transaction?(_resource), do: false

  # -- reads ----------------------------------------------------------------------------------

  @doc false
  @impl true
  def run_query(query, _resource), do: Query.run(query)

  @doc false
  @impl true
  def run_aggregate_query(query, aggregates, resource),
    do: Aggregates.run(query, aggregates, resource, &Query.run/1)

  @doc false
  @impl true
  def prefer_lateral_join_for_many_to_many?, do: false

  @doc false
  @impl true
  def run_query_with_lateral_join(query, root_data, _destination_resource, path),
    do: LateralJoin.run(query, root_data, path)

  @doc false
  @impl true
  def run_aggregate_query_with_lateral_join(query, aggregates, root_data, _destination, path),
    do: LateralJoin.run_aggregates(query, aggregates, root_data, path)

  # -- writes (AshGenServer.Write, AshGenServer.Upsert) ------------------------------------

  @doc false
  @impl true
  def create(resource, changeset), do: Write.create(resource, changeset)

  @doc false
  @impl true
  def update(resource, changeset), do: Write.update(resource, changeset)

  @doc false
  @impl true
  def destroy(resource, changeset), do: Write.destroy(resource, changeset)

  @doc false
  @impl true
  def update_query(query, changeset, resource, options),
    do: Atomics.update_query(query, changeset, resource, options)

  @doc false
  @impl true
  def destroy_query(query, changeset, resource, options),
    do: Atomics.destroy_query(query, changeset, resource, options)

  @doc false
  @impl true
  def upsert(resource, changeset, keys, identity \\ nil),
    do: Upsert.upsert(resource, changeset, keys, identity)

  @doc false
  @impl true
  def bulk_create(resource, changesets, options) do
    if options[:upsert?],
      do: Upsert.bulk_upsert(resource, changesets, options),
      else: Write.bulk_create(resource, changesets, options)
  end
end
