defmodule AshGenServer.Atomics do
  @moduledoc """
  Atomic updates for `AshGenServer.DataLayer`: `atomic_update`/`atomic_set` changes, updates and
  destroys by query (`c:Ash.DataLayer.update_query/4`, `c:Ash.DataLayer.destroy_query/4`).

  An update's atomics go to the node as the `atomics` option of `update` when
  `AshGenServer.Expr` translates every one of them (and the changeset filter is one the node
  evaluates exactly): the record's actor evaluates them against its current values and applies
  them in one turn, so concurrent increments never lose one.

  Otherwise the update is a **compare-and-set loop** here: read the record, check the filter and
  evaluate the atomics with Ash against it, then update it guarded by every value read
  (`{eq, Field, Value}` on each field, as the update's `filter`), and start again when the node
  answers `stale` (someone changed the record in between). Never a silent non-atomic write.

  Updates and destroys by query are one `update_where` / `destroy_where` request when the node
  evaluates the whole filter (and the atomics); otherwise the records are read and each is
  updated (destroyed) atomically as above, its filter checked again in the same turn, so a
  record that no longer matches is left alone.

  The resource's `atomics_in_node? false` (DSL) forces the compare-and-set loop.
  """

  alias AshGenServer.{Expr, Filter, Query, Results, Values}
  alias AshGenServer.DataLayer.{Layout, Requests}

  @max_attempts 10_000

  # -- single update --------------------------------------------------------------------------

  @doc """
  Updates one record (`pk`) with `changes` (stored form) and the changeset's atomics, only if
  it still matches `filter` (an Ash filter, or nil). `{:ok, stored}`, `:stale` (missing or not
  matching) or `{:error, error}`.
  """
  @spec update(Ash.Resource.t(), term, Ash.Changeset.t(), map, map, term) ::
          {:ok, map} | :stale | {:error, term}
  def update(resource, target, changeset, pk, changes, filter) do
    case node_plan(resource, changeset.atomics, filter) do
      {:ok, atomics, expr} ->
        opts = %{filter: Filter.to_request(expr), atomics: atomics}
        node_update(resource, target, pk, changes, opts)

      :error ->
        cas_update(resource, target, changeset, pk, changes, filter, 1)
    end
  end

  # `{:ok, node_atomics, node_filter}` when the node can do the whole update, else :error.
  defp node_plan(resource, atomics, filter) do
    plan = Filter.translate(filter, resource)

    with true <- Layout.get(resource).atomics_in_node?,
         true <- plan.exact?,
         {:ok, node_atomics} <- Expr.atomics(atomics || [], resource) do
      {:ok, node_atomics, plan.expr}
    else
      _ -> :error
    end
  end

  defp node_update(resource, target, pk, changes, opts) do
    case Requests.request(resource, {:update, target, pk, changes, opts}) do
      {:ok, stored} when is_map(stored) -> {:ok, stored}
      {:error, reason} when reason in [:stale, :not_found] -> :stale
      {:error, {:expr_error, term}} -> {:error, Expr.to_exception(term)}
      other -> Requests.result(other, resource: resource, request: :update)
    end
  end

  defp cas_update(resource, _target, _changeset, _pk, _changes, _filter, attempt)
       when attempt > @max_attempts do
    {:error,
     Ash.Error.Changes.StaleRecord.exception(
       resource: resource,
       filter: "the record kept changing: #{@max_attempts} compare-and-set attempts"
     )}
  end

  defp cas_update(resource, target, changeset, pk, changes, filter, attempt) do
    with {:ok, stored, current} <- read(resource, target, pk),
         :ok <- matches(changeset, current, filter),
         {:ok, values} <- evaluate(changeset, resource, current),
         {:ok, dumped} <- Values.dump_changes(resource, values) do
      request =
        {:update, target, pk, Map.merge(changes, dumped), %{filter: guard(resource, stored)}}

      case Requests.request(resource, request) do
        {:ok, stored} when is_map(stored) ->
          {:ok, stored}

        {:error, :stale} ->
          backoff(attempt)
          cas_update(resource, target, changeset, pk, changes, filter, attempt + 1)

        {:error, :not_found} ->
          :stale

        other ->
          Requests.result(other, resource: resource, request: :update)
      end
    end
  end

  # Contention: after a few lost rounds, wait a little (random, growing) before the next one.
  defp backoff(attempt) when attempt < 3, do: :ok
  defp backoff(attempt), do: Process.sleep(:rand.uniform(min(attempt, 20)))

  defp read(resource, target, pk) do
    case Requests.request(resource, {:get, target, pk}) do
      {:ok, stored} when is_map(stored) ->
        with {:ok, current} <- Values.cast_record(resource, stored), do: {:ok, stored, current}

      {:error, :not_found} ->
        :stale

      other ->
        Requests.result(other, resource: resource, request: :get)
    end
  end

  defp matches(changeset, current, filter) do
    if Filter.no_filter?(filter) do
      :ok
    else
      case Ash.Filter.Runtime.filter_matches(changeset.domain, [current], filter,
             tenant: changeset.tenant,
             actor: changeset.context[:private][:actor]
           ) do
        {:ok, [_]} -> :ok
        {:ok, []} -> :stale
        {:error, error} -> {:error, error}
      end
    end
  end

  @doc false
  # The changeset's atomics evaluated by Ash against `current` and cast to their attributes'
  # types: `{:ok, %{field => value}}`.
  def evaluate(changeset, resource, current, incoming \\ nil),
    do: evaluate_all(changeset.atomics || [], changeset, resource, current, incoming)

  @doc """
  The values of a create's `create_atomics` (`atomic_set`): each expression evaluated by Ash
  against `record`, the record being created (no stored record is involved, so nothing has to
  happen on the node), and cast to its attribute's type. `atomic_ref/1` reads `record`'s value.
  """
  @spec create_values(Ash.Changeset.t(), Ash.Resource.t(), struct) ::
          {:ok, map} | {:error, term}
  def create_values(%{create_atomics: atomics} = changeset, resource, record)
      when atomics not in [nil, []],
      do: evaluate_all(atomics, changeset, resource, record, nil)

  def create_values(_changeset, _resource, _record), do: {:ok, %{}}

  # Every expression is evaluated against the same record (as SQL's `SET` does).
  defp evaluate_all(atomics, changeset, resource, current, incoming) do
    with {:ok, values} <- evaluate_each(atomics, changeset, resource, current, incoming) do
      Values.cast_computed(resource, values)
    end
  end

  defp evaluate_each(atomics, changeset, resource, current, incoming) do
    Enum.reduce_while(atomics, {:ok, %{}}, fn {field, expr}, {:ok, acc} ->
      expr = if incoming, do: replace_conflicts(expr, incoming), else: expr

      case Ash.Expr.eval(expr,
             resource: resource,
             record: current,
             domain: changeset.domain,
             actor: changeset.context[:private][:actor],
             tenant: changeset.tenant,
             unknown_on_unknown_refs?: true
           ) do
        {:ok, value} ->
          {:cont, {:ok, Map.put(acc, field, value)}}

        {:error, error} ->
          {:halt, {:error, error}}

        :unknown ->
          {:halt,
           {:error,
            Ash.Error.Unknown.UnknownError.exception(
              error: "could not evaluate the atomic #{inspect(field)}: #{inspect(expr)}"
            )}}
      end
    end)
  end

  defp replace_conflicts(expr, incoming) do
    Ash.Filter.map(expr, fn
      %Ash.Query.UpsertConflict{attribute: name} -> Map.get(incoming, name)
      other -> other
    end)
  end

  @doc """
  The filter that holds only while a record still has exactly the stored values read: equality
  on every attribute (`is_nil` for a nil or absent one).
  """
  @spec guard(Ash.Resource.t(), map) :: term
  def guard(resource, stored) do
    Layout.get(resource).attribute_names
    |> Enum.map(fn name ->
      case Map.get(stored, name) do
        nil -> {:is_nil, name}
        value -> {:eq, name, value}
      end
    end)
    |> Enum.reduce(fn cond, acc -> {:and, acc, cond} end)
  end

  # -- by query -------------------------------------------------------------------------------

  @doc "`c:Ash.DataLayer.update_query/4`."
  def update_query(query, changeset, resource, options) do
    target = Query.target(query)

    with {:ok, query} <- add_filter(query, changeset.filter),
         {:ok, changes} <- Values.dump_changes(resource, changeset.attributes) do
      case where_plan(query, resource, changeset.atomics) do
        {:ok, request_query, atomics} ->
          opts = %{set: changes, atomics: atomics, return: return(options)}

          resource
          |> Requests.request({:update_where, target, request_query, opts})
          |> where_result(resource, changeset, options)

        :error ->
          each(query, resource, options, changeset, fn record, pk ->
            update(resource, target, changeset, pk, changes, query.filter)
            |> then(fn
              {:ok, stored} -> Values.cast_record(resource, stored)
              other -> other
            end)
            |> then(&{&1, record})
          end)
      end
    end
  end

  @doc "`c:Ash.DataLayer.destroy_query/4`."
  def destroy_query(query, changeset, resource, options) do
    target = Query.target(query)

    with {:ok, query} <- add_filter(query, changeset.filter) do
      case where_plan(query, resource, []) do
        {:ok, request_query, _} ->
          resource
          |> Requests.request({:destroy_where, target, request_query, %{return: return(options)}})
          |> where_result(resource, changeset, options)

        :error ->
          each(query, resource, options, changeset, fn record, pk ->
            {destroy(resource, target, changeset, record, pk, query.filter), record}
          end)
      end
    end
  end

  # Destroys one record read by a query, if it still matches `filter` (atomically).
  defp destroy(resource, target, changeset, record, pk, filter) do
    plan = Filter.translate(filter, resource)

    if plan.exact? do
      destroy_request(resource, {:destroy, target, pk, %{filter: Filter.to_request(plan.expr)}},
        record: record
      )
    else
      with {:ok, stored, current} <- read(resource, target, pk),
           :ok <- matches(changeset, current, filter) do
        request = {:destroy, target, pk, %{filter: guard(resource, stored)}}

        case destroy_request(resource, request, record: current) do
          :stale -> destroy(resource, target, changeset, record, pk, filter)
          other -> other
        end
      end
    end
  end

  defp destroy_request(resource, request, record: record) do
    case Requests.request(resource, request) do
      :ok -> {:ok, record}
      {:error, reason} when reason in [:stale, :not_found] -> :stale
      other -> Requests.result(other, resource: resource, request: :destroy)
    end
  end

  defp return(options), do: if(options[:return_records?], do: :records, else: :count)

  defp add_filter(query, filter) do
    if Filter.no_filter?(filter) do
      {:ok, query}
    else
      case query.filter do
        nil ->
          {:ok, %{query | filter: filter}}

        existing ->
          with {:ok, f} <- Ash.Filter.add_to_filter(existing, filter),
               do: {:ok, %{query | filter: f}}
      end
    end
  end

  # `update_where` / `destroy_where` when the node evaluates the whole query and the atomics.
  defp where_plan(query, resource, atomics) do
    plan = Query.plan(query)

    with true <- Layout.get(resource).atomics_in_node?,
         {:query, request_query} <- plan.request,
         false <- plan.runtime_filter? or plan.runtime_sort? or plan.runtime_page?,
         {:ok, node_atomics} <- Expr.atomics(atomics || [], resource) do
      {:ok, request_query, node_atomics}
    else
      {:get, pk} ->
        with true <- Layout.get(resource).atomics_in_node?,
             {:ok, node_atomics} <- Expr.atomics(atomics || [], resource) do
          {:ok, %{filter: pk_filter(pk)}, node_atomics}
        else
          _ -> :error
        end

      _ ->
        :error
    end
  end

  defp pk_filter(pk) do
    pk
    |> Enum.map(fn {field, value} -> {:eq, field, value} end)
    |> Enum.reduce(fn cond, acc -> {:and, acc, cond} end)
  end

  defp where_result(reply, resource, changeset, options) do
    case reply do
      {:ok, n} when is_integer(n) ->
        :ok

      {:ok, stored} when is_list(stored) ->
        with {:ok, records} <- Values.cast_records(resource, stored) do
          if options[:return_records?],
            do: {:ok, Enum.map(records, &Ash.Actions.Helpers.Bulk.put_metadata(&1, changeset))},
            else: :ok
        end

      {:error, {:expr_error, term}} ->
        {:error, Expr.to_exception(term)}

      other ->
        with {:ok, _} <- Requests.result(other, resource: resource, request: :update_where),
             do: :ok
    end
  end

  # Reads the query's records, then `fun.(record, pk)` on each: `{{:ok, record} | :stale |
  # {:error, e}, record}`; stale ones (changed since, no longer matching) are left out.
  defp each(query, resource, options, changeset, fun) do
    with {:ok, records} <- Query.run(%{query | aggregates: [], calculations: []}) do
      records
      |> Results.map_ok(fn record ->
        with {:ok, pk} <- Values.primary_key(resource, record) do
          case fun.(record, pk) do
            {{:ok, result}, _record} -> {:ok, [result]}
            {:stale, _record} -> {:ok, []}
            {{:error, error}, _record} -> {:error, error}
          end
        end
      end)
      |> case do
        {:ok, results} ->
          if options[:return_records?] do
            {:ok,
             results
             |> List.flatten()
             |> Enum.map(&Ash.Actions.Helpers.Bulk.put_metadata(&1, changeset))}
          else
            :ok
          end

        {:error, error} ->
          {:error, error}
      end
    end
  end
end
