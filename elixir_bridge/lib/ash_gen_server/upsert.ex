defmodule AshGenServer.Upsert do
  @moduledoc """
  Upserts for `AshGenServer.DataLayer`, single and bulk.

  On the primary key or an identity the node enforces, an upsert is the node's atomic `upsert`
  request: what the existing record gets is Ash's `set_on_upsert/2` plus the update defaults,
  and an `upsert_condition` the node can evaluate exactly is its `condition`. A condition it
  cannot evaluate (e.g. a function it lacks, on `upsert_conflict/1`) is checked by Ash against
  the existing record read first, and the upsert is then guarded by every value read (retried
  when the record changed, or was created, meanwhile). On keys the node does not know (an identity with a `where`) the upsert is
  emulated: look the record up, then update it or create it (not atomic).

  A bulk upsert whose records each set their own values for the same fields (with the same
  node atomics, if any) is one `bulk_create` request with `upsert => true, fields => [...]`;
  otherwise one `upsert` per record, which applies the atomics as a single upsert does.
  """

  alias Ash.Changeset
  alias AshGenServer.{Filter, Values, Write}
  alias AshGenServer.DataLayer.{Info, Layout, Requests}

  import Filter, only: [no_filter?: 1]

  # attempts of a read-then-write loop before it gives up with `StaleRecord`
  @max_attempts 10_000

  @doc "Upserts one record (`c:Ash.DataLayer.upsert/4`)."
  def upsert(resource, changeset, keys, identity \\ nil) do
    keys = keys || Ash.Resource.Info.primary_key(resource)

    with {:ok, record} <- Write.new_record(resource, changeset),
         {:ok, stored} <- Values.dump_record(resource, record),
         {:ok, set} <- Values.dump_changes(resource, upsert_set(resource, changeset, keys)) do
      target = Requests.target(resource, changeset.to_tenant)
      tenant_guard = tenant_guard(resource, keys, stored)

      condition =
        case upsert_condition(resource, changeset) do
          {:node, expr} -> {:node, and_(expr, tenant_guard)}
          {:runtime, expr} -> {:runtime, and_(expr, tenant_guard)}
        end

      atomics = node_atomics(resource, changeset)
      upsert = %{target: target, record: record, stored: stored, set: set, keys: keys}

      cond do
        not node_upsert_keys?(resource, keys) ->
          emulated_upsert(resource, changeset, upsert, identity, condition)

        atomics == :error ->
          cas_upsert(resource, changeset, upsert, condition, 1)

        match?({:runtime, _}, condition) ->
          {:ok, atomics} = atomics
          guarded_upsert(resource, changeset, upsert, condition, atomics, 1)

        true ->
          {:ok, atomics} = atomics
          {:node, condition} = condition
          node_upsert(resource, upsert, condition, atomics)
      end
    end
  end

  # One node `upsert` request: atomic in the record's actor.
  defp node_upsert(resource, upsert, condition, atomics) do
    options = %{keys: upsert.keys, set: upsert.set, condition: Filter.to_request(condition)}
    options = if atomics == [], do: options, else: Map.put(options, :atomics, atomics)

    case Requests.request(resource, {:upsert, upsert.target, upsert.stored, options}) do
      {:error, {:expr_error, term}} ->
        {:error, AshGenServer.Expr.to_exception(term)}

      reply ->
        reply
        |> Requests.result(resource: resource, request: :upsert, expect: &upsert_body?/1)
        |> upsert_result(resource)
    end
  end

  # An upsert condition the node cannot evaluate (e.g. `upsert_conflict/1` inside a function
  # the node lacks), checked by Ash against the existing record as read, then written with one
  # node `upsert` guarded by the values read: if the record changed meanwhile (or was created,
  # when none was read) the node skips it and we start again, so a concurrent change is never
  # overwritten on the strength of a stale check.
  defp guarded_upsert(resource, changeset, upsert, {:runtime, expr} = condition, atomics, attempt) do
    with {:ok, found} <- find_by_keys(resource, upsert) do
      case found do
        [] ->
          # none read: create only (an existing record means one was created meanwhile)
          resource
          |> node_upsert(upsert, false, atomics)
          |> retry_if_skipped(fn ->
            retry_guarded(resource, changeset, upsert, condition, atomics, attempt)
          end)

        [existing_stored] ->
          with {:ok, existing} <- Values.cast_record(resource, existing_stored),
               {:ok, true} <- condition_holds?(changeset, existing, upsert.record) do
            guard = AshGenServer.Atomics.guard(resource, existing_stored)

            resource
            |> node_upsert(upsert, and_(guard, expr), atomics)
            |> retry_if_skipped(fn ->
              retry_guarded(resource, changeset, upsert, condition, atomics, attempt)
            end)
          else
            {:ok, false} -> skipped(resource, existing_stored)
            {:error, error} -> {:error, error}
          end
      end
    end
  end

  defp retry_guarded(resource, changeset, upsert, condition, atomics, attempt) do
    if attempt >= @max_attempts,
      do: {:error, Ash.Error.Changes.StaleRecord.exception(resource: resource)},
      else: guarded_upsert(resource, changeset, upsert, condition, atomics, attempt + 1)
  end

  defp retry_if_skipped({:ok, record} = result, retry) do
    if Ash.Resource.get_metadata(record, :upsert_skipped), do: retry.(), else: result
  end

  defp retry_if_skipped(other, _retry), do: other

  defp skipped(resource, stored) do
    with {:ok, existing} <- Values.cast_record(resource, stored) do
      {:ok, Ash.Resource.put_metadata(existing, :upsert_skipped, true)}
    end
  end

  # The record with the upsert's key values (at most one: the keys are unique).
  defp find_by_keys(resource, upsert) do
    key_filter =
      upsert.keys
      |> Enum.map(&{:eq, &1, Map.get(upsert.stored, &1)})
      |> Enum.reduce(fn cond, acc -> {:and, acc, cond} end)

    query_request(
      resource,
      {:query, upsert.target, %{filter: key_filter, sort: [], offset: 0, limit: 1}}
    )
  end

  # Whether the changeset's upsert condition holds for `existing` (Ash evaluates it, with
  # `upsert_conflict/1` reading `incoming`): `{:ok, boolean}`.
  defp condition_holds?(%{filter: filter} = changeset, existing, incoming) do
    if no_filter?(filter) do
      {:ok, true}
    else
      case Ash.Filter.Runtime.filter_matches(changeset.domain, [existing], filter,
             tenant: changeset.tenant,
             actor: changeset.context[:private][:actor],
             conflicting_upsert_values: incoming
           ) do
        {:ok, [_]} -> {:ok, true}
        {:ok, []} -> {:ok, false}
        {:error, error} -> {:error, error}
      end
    end
  end

  # The upsert atomics (`atomic_update` on the update branch) as node value expressions:
  # `{:ok, []}` without any, `:error` when the node cannot evaluate them (or the resource says
  # `atomics_in_node? false`), so the compare-and-set loop must.
  defp node_atomics(_resource, %{atomics: atomics}) when atomics in [nil, []], do: {:ok, []}

  defp node_atomics(resource, changeset) do
    if Layout.get(resource).atomics_in_node?,
      do: AshGenServer.Expr.atomics(changeset.atomics, resource),
      else: :error
  end

  defp and_(true, x), do: x
  defp and_(x, true), do: x
  defp and_(x, y), do: {:and, x, y}

  # With the `:attribute` multitenancy strategy, an upsert on the primary key must not take
  # over another tenant's record: it only updates a record of the same tenant (else skipped).
  defp tenant_guard(resource, keys, stored) do
    with :attribute <- Ash.Resource.Info.multitenancy_strategy(resource),
         attribute when not is_nil(attribute) <-
           Ash.Resource.Info.multitenancy_attribute(resource),
         false <- attribute in keys,
         value when not is_nil(value) <- Map.get(stored, attribute) do
      {:eq, attribute, value}
    else
      _ -> true
    end
  end

  # Upsert atomics the node cannot evaluate: compare-and-set. Look the record up by its keys;
  # none: create it (a racing create makes us start again); one: check the condition (Ash
  # checks one the node cannot evaluate, on the record read), evaluate the atomics with Ash
  # (`upsert_conflict/1` reading the incoming values) and update it guarded by the values read,
  # starting again if it changed meanwhile.
  defp cas_upsert(resource, changeset, upsert, condition, attempt) do
    retry = fn ->
      if attempt >= @max_attempts,
        do: {:error, Ash.Error.Changes.StaleRecord.exception(resource: resource)},
        else: cas_upsert(resource, changeset, upsert, condition, attempt + 1)
    end

    %{target: target, record: record, stored: stored, set: set} = upsert

    with {:ok, found} <- find_by_keys(resource, upsert) do
      case found do
        [] ->
          case Requests.request(resource, {:create, target, stored}) do
            {:ok, created} ->
              resource |> Values.cast_record(created) |> put_upsert_action(:create)

            {:error, {kind, _}} when kind in [:already_exists] ->
              retry.()

            {:error, {:identity_conflict, _, _}} ->
              retry.()

            other ->
              Requests.result(other, resource: resource, request: :create)
          end

        [existing_stored] ->
          {:ok, existing} = Values.cast_record(resource, existing_stored)
          {:ok, pk} = Values.primary_key(resource, existing)
          guard = AshGenServer.Atomics.guard(resource, existing_stored)

          {holds, expr} =
            case condition do
              {:node, expr} -> {{:ok, true}, expr}
              {:runtime, expr} -> {condition_holds?(changeset, existing, record), expr}
            end

          guard = and_(guard, expr)

          with {:ok, true} <- holds,
               {:ok, values} <-
                 AshGenServer.Atomics.evaluate(changeset, resource, existing, record),
               {:ok, dumped} <- Values.dump_changes(resource, values) do
            case Requests.request(
                   resource,
                   {:update, target, pk, Map.merge(set, dumped), %{filter: guard}}
                 ) do
              {:ok, updated} ->
                resource |> Values.cast_record(updated) |> put_upsert_action(:update)

              {:error, :stale} ->
                # changed meanwhile, or the condition does not hold: which one?
                case Requests.request(resource, {:get, target, pk}) do
                  {:ok, ^existing_stored} ->
                    {:ok, Ash.Resource.put_metadata(existing, :upsert_skipped, true)}

                  _ ->
                    retry.()
                end

              {:error, :not_found} ->
                retry.()

              other ->
                Requests.result(other, resource: resource, request: :upsert)
            end
          else
            {:ok, false} -> {:ok, Ash.Resource.put_metadata(existing, :upsert_skipped, true)}
            {:error, error} -> {:error, error}
          end
      end
    end
  end

  # The node upserts atomically on the primary key or an identity it enforces.
  defp node_upsert_keys?(resource, keys) do
    keys = keys |> Enum.uniq() |> Enum.sort()

    keys == Enum.sort(Ash.Resource.Info.primary_key(resource)) or
      Enum.any?(Info.node_identities(resource), fn identity ->
        identity |> elem(1) |> Enum.sort() == keys
      end)
  end

  # Upsert keys the node does not know (an identity with a `where`): look the record up, then
  # update it (still only if its keys and the pushable condition hold) or create it. Not atomic.
  defp emulated_upsert(resource, changeset, upsert, identity, condition) do
    %{stored: stored, set: set, keys: keys} = upsert
    key_values = Map.take(stored, keys)

    if Enum.any?(key_values, fn {_, value} -> is_nil(value) end) do
      resource |> Write.create(changeset) |> put_upsert_action(:create)
    else
      key_filter =
        key_values
        |> Enum.map(fn {key, value} -> {:eq, key, value} end)
        |> Enum.reduce(fn cond, acc -> {:and, acc, cond} end)

      with {:ok, found} <-
             query_request(
               resource,
               {:query, Requests.target(resource, changeset.to_tenant),
                %{filter: key_filter, sort: [], offset: 0, limit: nil}}
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
            resource |> Write.create(changeset) |> put_upsert_action(:create)

          [existing | _] ->
            {:ok, pk} = Values.primary_key(resource, existing)
            {kind, expr} = condition
            guard = and_(key_filter, expr)

            holds =
              if kind == :runtime,
                do: condition_holds?(changeset, existing, upsert.record),
                else: {:ok, true}

            with {:ok, true} <- holds do
              emulated_update(resource, changeset, existing, pk, set, guard)
            else
              {:ok, false} -> {:ok, Ash.Resource.put_metadata(existing, :upsert_skipped, true)}
              {:error, error} -> {:error, error}
            end
        end
      end
    end
  end

  defp emulated_update(resource, changeset, existing, pk, set, guard) do
    case Requests.run(
           resource,
           {:update, Requests.target(resource, changeset.to_tenant), pk, set, %{filter: guard}},
           request: :upsert
         ) do
      {:ok, updated} ->
        resource
        |> Values.cast_record(updated)
        |> put_upsert_action(:update)

      {:error, %Ash.Error.Changes.StaleRecord{}} ->
        {:ok, Ash.Resource.put_metadata(existing, :upsert_skipped, true)}

      {:error, error} ->
        {:error, error}
    end
  end

  defp put_upsert_action({:ok, record}, action),
    do: {:ok, Ash.Resource.put_metadata(record, :upsert_action, action)}

  defp put_upsert_action(other, _action), do: other

  # The body of an `upsert` reply (`{ok, Action, Record}`, see
  # `AshGenServer.DataLayer.Requests.result/2`).
  defp upsert_body?({action, _stored}), do: action in [:created, :updated, :skipped]
  defp upsert_body?(_body), do: false

  defp upsert_result({:ok, {action, stored}}, resource) do
    with {:ok, result} <- Values.cast_record(resource, stored) do
      {:ok, upsert_metadata(result, action)}
    end
  end

  defp upsert_result({:error, error}, _resource), do: {:error, error}

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

  # The upsert condition (`upsert_condition`, in `changeset.filter`): `{:node, expr}` when the
  # node evaluates it exactly (checked atomically in the record's actor), else
  # `{:runtime, expr}`: Ash checks it against the existing record read (e.g. one using
  # `upsert_conflict/1` in a function the node lacks), `expr` being its pushable part, still sent.
  defp upsert_condition(resource, %{filter: filter}) do
    if no_filter?(filter) do
      {:node, true}
    else
      plan = Filter.translate(filter, resource)
      if plan.exact?, do: {:node, plan.expr}, else: {:runtime, plan.expr}
    end
  end

  defp query_request(resource, request),
    do: Requests.run(resource, request, request: :query, expect: &is_list/1)

  # Bulk upserts (`c:Ash.DataLayer.bulk_create/3` with `upsert?`). When every record of the
  # batch sets, on conflict, the same fields with its own values, the condition is the same
  # exact node expression and the upsert atomics are the same node expressions (reading each
  # record's own values through `{incoming, Field}`), the batch is one `bulk_create` request
  # with `upsert => true, fields => [...], atomics => [...]`. Otherwise (update defaults that
  # differ from the created values, conditions Ash must check, atomics the node cannot
  # evaluate or that differ per record...) each record is one `upsert` request, atomics
  # included (in the node, else the compare-and-set loop).
  @doc false
  def bulk_upsert(resource, changesets, options) do
    with results when is_list(results) <- bulk_upsert_results(resource, changesets, options) do
      Write.bulk_result(results, options)
    end
  end

  defp bulk_upsert_results(resource, changesets, options) do
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
      {:ok, prepared, fields, condition, atomics} ->
        opts = %{
          upsert: true,
          keys: keys,
          fields: fields,
          condition: Filter.to_request(condition)
        }

        opts = if atomics == [], do: opts, else: Map.put(opts, :atomics, atomics)

        stored = Enum.map(prepared, & &1.stored)

        with {:ok, replies} <-
               Requests.run(
                 resource,
                 {:bulk_create, Requests.target(resource, options[:tenant]), stored, opts},
                 request: :bulk_create,
                 expect: &(is_list(&1) and length(&1) == length(stored))
               ) do
          prepared
          |> Enum.zip(replies)
          |> Enum.map(fn {%{changeset: changeset}, reply} ->
            reply
            |> Requests.result(resource: resource, request: :upsert, expect: &upsert_body?/1)
            |> upsert_result(resource)
            |> case do
              {:ok, record} -> {:ok, record, changeset}
              {:error, error} -> {:error, error, changeset}
            end
          end)
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
        with {:ok, record} <- Write.new_record(resource, changeset),
             {:ok, stored} <- Values.dump_record(resource, record),
             {:ok, set} <- Values.dump_changes(resource, upsert_set(resource, changeset, keys)) do
          condition =
            if no_filter?(changeset.filter),
              do: %{expr: true, exact?: true},
              else: Filter.translate(changeset.filter, resource)

          %{
            changeset: changeset,
            stored: stored,
            set: set,
            condition: condition,
            atomics: node_atomics(resource, changeset)
          }
        end
      end)

    with true <- node_upsert_keys?(resource, keys),
         [%{set: set, condition: %{expr: expr}, atomics: {:ok, atomics}} | _] <- prepared,
         fields = set |> Map.keys() |> Enum.sort(),
         true <-
           Enum.all?(prepared, fn
             %{set: set, stored: stored, condition: condition} = plan ->
               condition.exact? and condition.expr == expr and
                 plan.atomics == {:ok, atomics} and
                 Enum.sort(Map.keys(set)) == fields and Map.take(stored, fields) == set

             _error ->
               false
           end) do
      {:ok, prepared, fields, expr, atomics}
    else
      _ -> :error
    end
  end
end
