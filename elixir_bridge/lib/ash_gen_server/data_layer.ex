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
          "The node holding the records, e.g. `:\"rust@127.0.0.1\"`. Defaults to `config :ash_gen_server, node: ...`."
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
  - creates, updates and destroys are single requests; an update or destroy carrying a
    `changeset.filter` (optimistic locking, atomic conditions) sends it as the request's
    `filter`, checked atomically by the record's actor, and `{error, stale}` becomes
    `Ash.Error.Changes.StaleRecord`;
  - upserts (by primary key or identity) are atomic `upsert` requests; identities without a
    `where` are enforced by the node;
  - aggregates are computed by the node where it can (`AshGenServer.Aggregates`);
  - expired records are destroyed through the primary destroy action
    (`AshGenServer.ExpiryHandler`).

  There are no transactions (`can?(_, :transact)` is false, as for `Ash.DataLayer.Ets`); Ash's
  before/after action hooks still run in order.

  Known limits: the node compares identity values exactly (an identity on a `ci_string` is
  case-sensitive on the node), identities with a `where` are not enforced by the node,
  multitenancy and atomic updates (`atomic_update`, bulk update/destroy by query) are not
  supported. With Elixir 1.14, Ash's date arithmetic expressions (`ago`, `from_now`,
  `date_add`...), `Duration`, Reactor-backed actions and `Ash.Info.defined_extensions/1` do not
  work; that is Ash on Elixir 1.14, not this data layer.

  ## DSL

  #{Spark.Options.docs(@gen_server.schema)}
  """

  use Spark.Dsl.Extension, sections: [@gen_server]

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

  alias Ash.Changeset
  alias AshGenServer.{Aggregates, Client, Filter, Query, Values}
  alias AshGenServer.DataLayer.Info

  # -- capabilities ---------------------------------------------------------------------------

  @doc false
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
  def can?(_, :offset), do: true
  def can?(_, :limit), do: true
  def can?(_, :composite_primary_key), do: true
  def can?(_, :upsert), do: true
  def can?(_, :bulk_create), do: true
  def can?(_, :bulk_create_with_partial_success), do: true
  def can?(_, :changeset_filter), do: true
  def can?(_, :async_engine), do: true
  def can?(_, {:join, _}), do: true
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
  def set_context(_resource, query, context), do: {:ok, %{query | context: context}}

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
    do: Aggregates.run(query, aggregates, resource)

  # -- writes ---------------------------------------------------------------------------------

  @doc false
  @impl true
  def create(resource, changeset) do
    with {:ok, stored} <- dump_new(resource, changeset) do
      resource
      |> Client.request({:create, resource, stored})
      |> case do
        {:ok, record} -> Values.cast_record(resource, record)
        {:error, reason} -> error(reason, resource, :create)
        other -> error(other, resource, :create)
      end
    end
  end

  @doc false
  @impl true
  def update(resource, changeset) do
    with {:ok, pk} <- Values.primary_key(resource, changeset.data),
         {:ok, changes} <- Values.dump_changes(resource, changeset.attributes),
         {:ok, opts} <- condition(resource, changeset, pk) do
      request =
        case opts do
          nil -> {:update, resource, pk, changes}
          opts -> {:update, resource, pk, changes, opts}
        end

      case Client.request(resource, request) do
        {:ok, stored} ->
          with {:ok, record} <- Values.cast_record(resource, stored) do
            {:ok, retain_loaded(record, changeset.data)}
          end

        {:error, reason} ->
          error(reason, resource, :update, filter: changeset.filter, not_found: :stale)

        other ->
          error(other, resource, :update)
      end
    end
  end

  @doc false
  @impl true
  def destroy(resource, changeset) do
    with {:ok, pk} <- Values.primary_key(resource, changeset.data),
         {:ok, opts} <- condition(resource, changeset, pk) do
      request =
        case opts do
          nil -> {:destroy, resource, pk}
          opts -> {:destroy, resource, pk, opts}
        end

      case Client.request(resource, request) do
        :ok ->
          :ok

        {:error, reason} ->
          error(reason, resource, :destroy, filter: changeset.filter, not_found: :stale)

        other ->
          error(other, resource, :destroy)
      end
    end
  end

  # The `#{filter => Expr}` option of an update/destroy. A changeset filter the node evaluates
  # exactly is sent as is. Otherwise Ash checks it against the current record first (stale if
  # it does not hold) and the pushable part is still sent, so it stays atomic where it can.
  defp condition(resource, %{filter: filter} = changeset, pk) do
    if no_filter?(filter) do
      {:ok, nil}
    else
      plan = Filter.translate(filter, resource)

      with :ok <- unless(plan.exact?, do: runtime_check(resource, changeset, pk), else: :ok) do
        case plan.expr do
          true -> {:ok, nil}
          expr -> {:ok, %{filter: expr}}
        end
      end
    end
  end

  defp runtime_check(resource, changeset, pk) do
    stale = fn ->
      {:error,
       Ash.Error.Changes.StaleRecord.exception(resource: resource, filter: changeset.filter)}
    end

    case Client.request(resource, {:get, resource, pk}) do
      {:ok, stored} ->
        with {:ok, current} <- Values.cast_record(resource, stored) do
          case Ash.Filter.Runtime.filter_matches(changeset.domain, [current], changeset.filter,
                 tenant: changeset.tenant,
                 actor: changeset.context[:private][:actor]
               ) do
            {:ok, [_]} -> :ok
            {:ok, []} -> stale.()
            {:error, error} -> {:error, error}
          end
        end

      {:error, :not_found} ->
        stale.()

      {:error, reason} ->
        error(reason, resource, :get)
    end
  end

  defp no_filter?(nil), do: true
  defp no_filter?(true), do: true
  defp no_filter?(%Ash.Filter{expression: expression}) when expression in [nil, true], do: true
  defp no_filter?(_), do: false

  # Keep what the changeset's data had loaded (relationships, calculations, metadata) and take
  # the attributes from the stored record.
  defp retain_loaded(record, %resource{} = data) do
    names = Enum.map(Ash.Resource.Info.attributes(resource), & &1.name)
    Map.merge(data, Map.take(record, [:__meta__ | names]))
  end

  defp retain_loaded(record, _data), do: record

  defp dump_new(resource, changeset) do
    with {:ok, record} <- Changeset.apply_attributes(changeset) do
      Values.dump_record(resource, record)
    end
  end

  # -- upserts --------------------------------------------------------------------------------

  @doc false
  @impl true
  def upsert(resource, changeset, keys, identity \\ nil) do
    keys = keys || Ash.Resource.Info.primary_key(resource)

    with {:ok, record} <- Changeset.apply_attributes(changeset),
         {:ok, stored} <- Values.dump_record(resource, record),
         {:ok, set} <- Values.dump_changes(resource, upsert_set(resource, changeset, keys)),
         {:ok, condition} <- upsert_condition(resource, changeset, record, stored, keys) do
      case condition do
        {:skip, existing} ->
          {:ok, Ash.Resource.put_metadata(existing, :upsert_skipped, true)}

        condition ->
          if node_upsert_keys?(resource, keys) do
            request =
              {:upsert, resource, stored,
               %{keys: keys, set: set, condition: Filter.to_request(condition)}}

            resource
            |> Client.request(request)
            |> upsert_reply(resource, identity)
          else
            emulated_upsert(resource, changeset, stored, set, keys, identity, condition)
          end
      end
    end
  end

  # The node upserts atomically on the primary key or an identity it enforces.
  defp node_upsert_keys?(resource, keys) do
    keys = Enum.sort(keys)

    keys == Enum.sort(Ash.Resource.Info.primary_key(resource)) or
      Enum.any?(Info.node_identities(resource), fn {_name, identity_keys} ->
        Enum.sort(identity_keys) == keys
      end)
  end

  # Upsert keys the node does not know (an identity with a `where`): look the record up, then
  # update it (still only if its keys and the pushable condition hold) or create it. Not atomic.
  defp emulated_upsert(resource, changeset, stored, set, keys, identity, condition) do
    key_values = Map.take(stored, keys)

    if Enum.any?(key_values, fn {_, value} -> is_nil(value) end) do
      resource |> create(changeset) |> put_upsert_action(:create)
    else
      key_filter =
        key_values
        |> Enum.map(fn {key, value} -> {:eq, key, value} end)
        |> Enum.reduce(fn cond, acc -> {:and, acc, cond} end)

      with {:ok, found} <-
             query_request(
               resource,
               {:query, resource, %{filter: key_filter, sort: [], offset: 0, limit: nil}}
             ),
           {:ok, found} <- Values.cast_records(resource, found),
           {:ok, found} <-
             Ash.Filter.Runtime.filter_matches(
               changeset.domain,
               found,
               identity && identity.where && Ash.Filter.parse!(resource, identity.where)
             ) do
        case found do
          [] ->
            resource |> create(changeset) |> put_upsert_action(:create)

          [existing | _] ->
            {:ok, pk} = Values.primary_key(resource, existing)
            guard = if condition == true, do: key_filter, else: {:and, key_filter, condition}

            case Client.request(resource, {:update, resource, pk, set, %{filter: guard}}) do
              {:ok, updated} ->
                resource
                |> Values.cast_record(updated)
                |> put_upsert_action(:update)

              {:error, :stale} ->
                {:ok, Ash.Resource.put_metadata(existing, :upsert_skipped, true)}

              {:error, reason} ->
                error(reason, resource, :upsert, identity: identity)
            end
        end
      end
    end
  end

  defp put_upsert_action({:ok, record}, action),
    do: {:ok, Ash.Resource.put_metadata(record, :upsert_action, action)}

  defp put_upsert_action(other, _action), do: other

  defp upsert_reply({:ok, action, stored}, resource, _identity)
       when action in [:created, :updated, :skipped] do
    with {:ok, result} <- Values.cast_record(resource, stored) do
      {:ok, upsert_metadata(result, action)}
    end
  end

  defp upsert_reply({:error, reason}, resource, identity),
    do: error(reason, resource, :upsert, identity: identity)

  defp upsert_reply(other, resource, _identity), do: error(other, resource, :upsert)

  defp upsert_metadata(record, :skipped),
    do: Ash.Resource.put_metadata(record, :upsert_skipped, true)

  defp upsert_metadata(record, :created),
    do: Ash.Resource.put_metadata(record, :upsert_action, :create)

  defp upsert_metadata(record, :updated),
    do: Ash.Resource.put_metadata(record, :upsert_action, :update)

  # What an existing record gets on conflict: Ash's `set_on_upsert/2`, plus the update defaults
  # (`update_default`) unless the action says not to touch them.
  defp upsert_set(resource, changeset, keys) do
    to_set = Changeset.set_on_upsert(changeset, keys)
    touch? = changeset.context[:private][:touch_update_defaults?]
    upsert_fields = changeset.context[:private][:upsert_fields]

    update_defaults =
      resource |> Ash.Resource.Info.attributes() |> Enum.filter(& &1.update_default)

    if touch? == false or to_set == [] do
      explicit? = fn name ->
        if is_list(upsert_fields),
          do: name in upsert_fields,
          else:
            Map.has_key?(changeset.attributes, name) and
              name not in Map.get(changeset, :defaults, [])
      end

      default_names = MapSet.new(update_defaults, & &1.name)

      Enum.reject(to_set, fn {name, _} ->
        MapSet.member?(default_names, name) and not explicit?.(name)
      end)
    else
      Enum.reduce(update_defaults, to_set, fn attribute, acc ->
        if Keyword.has_key?(acc, attribute.name),
          do: acc,
          else: Keyword.put(acc, attribute.name, default_value(attribute.update_default))
      end)
    end
  end

  defp default_value(fun) when is_function(fun, 0), do: fun.()
  defp default_value({m, f, a}) when is_atom(m) and is_atom(f) and is_list(a), do: apply(m, f, a)
  defp default_value(value), do: value

  # The upsert condition (`upsert_condition`, in `changeset.filter`). Exact ones go to the node
  # and are checked atomically. Others (e.g. using `upsert_conflict/1`) are checked here
  # against the existing record, and the pushable part is still sent.
  defp upsert_condition(resource, %{filter: filter} = changeset, record, stored, keys) do
    if no_filter?(filter) do
      {:ok, true}
    else
      plan = Filter.translate(filter, resource)

      if plan.exact? do
        {:ok, plan.expr}
      else
        key_filter =
          keys
          |> Enum.map(&{:eq, &1, Map.get(stored, &1)})
          |> Enum.reduce(fn cond, acc -> {:and, acc, cond} end)

        request = {:query, resource, %{filter: key_filter, sort: [], offset: 0, limit: 1}}

        with {:ok, found} <- query_request(resource, request),
             {:ok, existing} <- Values.cast_records(resource, found) do
          case existing do
            [] ->
              {:ok, plan.expr}

            [existing] ->
              case Ash.Filter.Runtime.filter_matches(changeset.domain, [existing], filter,
                     tenant: changeset.tenant,
                     actor: changeset.context[:private][:actor],
                     conflicting_upsert_values: record
                   ) do
                {:ok, [_]} -> {:ok, plan.expr}
                {:ok, []} -> {:ok, {:skip, existing}}
                {:error, error} -> {:error, error}
              end
          end
        end
      end
    end
  end

  defp query_request(resource, request) do
    case Client.request(resource, request) do
      {:ok, records} when is_list(records) -> {:ok, records}
      {:error, reason} -> error(reason, resource, :query)
      other -> error(other, resource, :query)
    end
  end

  # -- bulk create ----------------------------------------------------------------------------

  @doc false
  @impl true
  def bulk_create(resource, changesets, options) do
    changesets = Enum.to_list(changesets)

    results =
      if options[:upsert?] do
        bulk_upsert(resource, changesets, options)
      else
        bulk_insert(resource, changesets)
      end

    case results do
      {:error, error} -> {:error, error}
      results -> bulk_result(results, options)
    end
  end

  # Plain creates: one `bulk_create` request for the batch; each record succeeds or fails alone.
  defp bulk_insert(resource, changesets) do
    prepared =
      Enum.map(changesets, fn changeset ->
        case dump_new(resource, changeset) do
          {:ok, stored} -> {:ok, stored, changeset}
          {:error, error} -> {:error, error, changeset}
        end
      end)

    to_send = for {:ok, stored, _} <- prepared, do: stored

    case Client.request(resource, {:bulk_create, resource, to_send, %{}}) do
      {:ok, replies} when is_list(replies) and length(replies) == length(to_send) ->
        merge_replies(prepared, replies, resource)

      {:error, reason} ->
        error(reason, resource, :bulk_create)

      other ->
        error(other, resource, :bulk_create)
    end
  end

  defp merge_replies([], _replies, _resource), do: []

  defp merge_replies([{:error, error, changeset} | rest], replies, resource),
    do: [{:error, error, changeset} | merge_replies(rest, replies, resource)]

  defp merge_replies([{:ok, _stored, changeset} | rest], [reply | replies], resource) do
    result =
      case reply do
        {:ok, stored} ->
          case Values.cast_record(resource, stored) do
            {:ok, record} -> {:ok, record, changeset}
            {:error, error} -> {:error, error, changeset}
          end

        {:error, reason} ->
          {:error, Client.to_ash_error(reason, resource: resource, request: :create), changeset}
      end

    [result | merge_replies(rest, replies, resource)]
  end

  # Upserts. When every record of the batch sets, on conflict, the same fields with its own
  # values and the condition is the same exact node expression, the batch is one `bulk_create`
  # request with `upsert => true, fields => [...]`. Otherwise (update defaults that differ from
  # the created values, conditions Ash must check...) each record is one `upsert` request.
  defp bulk_upsert(resource, changesets, options) do
    keys = options[:upsert_keys] || Ash.Resource.Info.primary_key(resource)

    changesets =
      Enum.map(changesets, fn changeset ->
        Changeset.set_context(changeset, %{
          private: %{
            upsert_fields: options[:upsert_fields] || [],
            touch_update_defaults?: Map.get(options, :touch_update_defaults?, true)
          }
        })
      end)

    case batch_upsert_plan(resource, changesets, keys) do
      {:ok, prepared, fields, condition} ->
        opts = %{
          upsert: true,
          keys: keys,
          fields: fields,
          condition: Filter.to_request(condition)
        }

        stored = Enum.map(prepared, & &1.stored)

        case Client.request(resource, {:bulk_create, resource, stored, opts}) do
          {:ok, replies} when is_list(replies) and length(replies) == length(stored) ->
            prepared
            |> Enum.zip(replies)
            |> Enum.map(fn {%{changeset: changeset}, reply} ->
              case upsert_reply(reply, resource, options[:identity]) do
                {:ok, record} -> {:ok, record, changeset}
                {:error, error} -> {:error, error, changeset}
              end
            end)

          {:error, reason} ->
            error(reason, resource, :bulk_create)

          other ->
            error(other, resource, :bulk_create)
        end

      :error ->
        Enum.map(changesets, fn changeset ->
          case upsert(resource, changeset, keys, options[:identity]) do
            {:ok, record} -> {:ok, record, changeset}
            {:error, error} -> {:error, error, changeset}
          end
        end)
    end
  end

  defp batch_upsert_plan(resource, changesets, keys) do
    prepared =
      Enum.map(changesets, fn changeset ->
        with {:ok, record} <- Changeset.apply_attributes(changeset),
             {:ok, stored} <- Values.dump_record(resource, record),
             {:ok, set} <- Values.dump_changes(resource, upsert_set(resource, changeset, keys)) do
          condition =
            if no_filter?(changeset.filter),
              do: %{expr: true, exact?: true},
              else: Filter.translate(changeset.filter, resource)

          %{changeset: changeset, stored: stored, set: set, condition: condition}
        end
      end)

    with true <- node_upsert_keys?(resource, keys),
         [%{set: set, condition: %{expr: expr}} | _] <- prepared,
         fields = set |> Map.keys() |> Enum.sort(),
         true <-
           Enum.all?(prepared, fn
             %{set: set, stored: stored, condition: condition} ->
               condition.exact? and condition.expr == expr and
                 Enum.sort(Map.keys(set)) == fields and Map.take(stored, fields) == set

             _error ->
               false
           end) do
      {:ok, prepared, fields, expr}
    else
      _ -> :error
    end
  end

  defp bulk_result(results, options) do
    {ok, failed} =
      Enum.reduce(results, {[], []}, fn
        {:ok, record, changeset}, {ok, failed} ->
          if Ash.Resource.get_metadata(record, :upsert_skipped) do
            {ok, failed}
          else
            {[Ash.Actions.Helpers.Bulk.put_metadata(record, changeset) | ok], failed}
          end

        {:error, error, changeset}, {ok, failed} ->
          {ok, [{error, changeset} | failed]}
      end)

    ok = Enum.reverse(ok)
    failed = Enum.reverse(failed)

    cond do
      failed != [] -> {:partial_success, failed, if(options[:return_records?], do: ok, else: [])}
      options[:return_records?] -> {:ok, ok}
      true -> :ok
    end
  end

  # -- errors ---------------------------------------------------------------------------------

  defp error(reason, resource, request, context \\ []) do
    {:error,
     Client.to_ash_error(reason, Keyword.merge([resource: resource, request: request], context))}
  end
end
