defmodule AshGenServer.Write do
  @moduledoc """
  Creates, updates, destroys and bulk creates for `AshGenServer.DataLayer`.

  Each write is one request to the node. An update or destroy carrying a `changeset.filter`
  (optimistic locking, atomic conditions) sends the filter as the request's `filter` option,
  checked atomically by the record's actor; a filter the node cannot evaluate exactly is first
  checked by Ash against the current record, and its pushable part is still sent.

  A bulk create of a batch is all or nothing, as on `Ash.DataLayer.Ets` and in a SQL
  transaction: a record the shim cannot store (a value that does not dump, an `atomic_set`
  that fails) fails the batch before anything is sent, and otherwise the batch is one
  `bulk_create` request with `all_or_nothing => true`, which the node refuses whole when one
  record's primary key is missing or taken or one of its identities is taken (docs/PROTOCOL.md). The batch then answers that
  record's error and no record of it exists, so the data layer does not declare
  `:bulk_create_with_partial_success` and Ash stops at a batch's first error as it does on Ets.
  Bulk upserts (`AshGenServer.Upsert`) are per record: a failing record leaves the others of
  its batch upserted, and the batch answers `{:partial_success, ...}` with each record's result.
  """

  alias Ash.Changeset
  alias Ash.Error.Changes.StaleRecord
  alias AshGenServer.{Atomics, Filter, Values}
  alias AshGenServer.DataLayer.{Layout, Requests}

  @doc false
  def create(resource, changeset) do
    with {:ok, stored} <- dump_new(resource, changeset),
         target = Requests.target(resource, changeset.to_tenant),
         {:ok, record} <- Requests.run(resource, {:create, target, stored}, request: :create) do
      Values.cast_record(resource, record)
    end
  end

  @doc false
  def update(resource, %{atomics: atomics} = changeset) when atomics not in [nil, []] do
    target = Requests.target(resource, changeset.to_tenant)

    with {:ok, pk} <- Values.primary_key(resource, changeset.data),
         {:ok, changes} <- Values.dump_changes(resource, changeset.attributes) do
      case Atomics.update(resource, target, changeset, pk, changes, changeset.filter) do
        {:ok, stored} ->
          with {:ok, record} <- Values.cast_record(resource, stored) do
            {:ok, retain_loaded(record, changeset.data)}
          end

        :stale ->
          {:error, StaleRecord.exception(resource: resource, filter: changeset.filter)}

        {:error, error} ->
          {:error, error}
      end
    end
  end

  def update(resource, changeset) do
    context = [request: :update, filter: changeset.filter, not_found: :stale]
    target = Requests.target(resource, changeset.to_tenant)

    with {:ok, pk} <- Values.primary_key(resource, changeset.data),
         {:ok, changes} <- Values.dump_changes(resource, changeset.attributes),
         {:ok, opts} <- condition(resource, changeset, pk),
         request = with_opts({:update, target, pk, changes}, opts),
         {:ok, stored} <- Requests.run(resource, request, context),
         {:ok, record} <- Values.cast_record(resource, stored) do
      {:ok, retain_loaded(record, changeset.data)}
    end
  end

  @doc false
  def destroy(resource, changeset) do
    context = [request: :destroy, filter: changeset.filter, not_found: :stale]
    target = Requests.target(resource, changeset.to_tenant)

    with {:ok, pk} <- Values.primary_key(resource, changeset.data),
         {:ok, opts} <- condition(resource, changeset, pk),
         {:ok, _} <- Requests.run(resource, with_opts({:destroy, target, pk}, opts), context) do
      :ok
    end
  end

  # An update/destroy request, with its options (`condition/3`) when there are any.
  defp with_opts(request, nil), do: request
  defp with_opts(request, opts), do: Tuple.append(request, opts)

  # The `#{filter => Expr}` option of an update/destroy. A changeset filter the node evaluates
  # exactly is sent as is. Otherwise Ash checks it against the current record first (stale if
  # it does not hold) and the pushable part is still sent, so it stays atomic where it can.
  defp condition(resource, %{filter: filter} = changeset, pk) do
    if Filter.no_filter?(filter) do
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

  # Stale when the record does not match, or is missing.
  defp runtime_check(resource, changeset, pk) do
    context = [request: :get, filter: changeset.filter, not_found: :stale]

    target = Requests.target(resource, changeset.to_tenant)

    with {:ok, stored} <- Requests.run(resource, {:get, target, pk}, context),
         {:ok, current} <- Values.cast_record(resource, stored) do
      case Ash.Filter.Runtime.filter_matches(changeset.domain, [current], changeset.filter,
             tenant: changeset.tenant,
             actor: changeset.context[:private][:actor]
           ) do
        {:ok, [_]} -> :ok
        {:ok, []} -> {:error, StaleRecord.exception(resource: resource, filter: changeset.filter)}
        {:error, error} -> {:error, error}
      end
    end
  end

  # Keep what the changeset's data had loaded (relationships, calculations, metadata) and take
  # the attributes from the stored record.
  defp retain_loaded(record, %resource{} = data) do
    names = Layout.get(resource).attribute_names
    Map.merge(data, Map.take(record, [:__meta__ | names]))
  end

  defp retain_loaded(record, _data), do: record

  @doc false
  # The record a create (or an upsert's create branch) stores: the changeset's attributes, then
  # its `create_atomics` (`atomic_set`) evaluated against them (`Atomics.create_values/3`).
  def new_record(resource, changeset) do
    with {:ok, record} <- Changeset.apply_attributes(changeset),
         {:ok, values} <- Atomics.create_values(changeset, resource, record) do
      {:ok, struct(record, values)}
    end
  end

  @doc false
  def dump_new(resource, changeset) do
    with {:ok, record} <- new_record(resource, changeset) do
      Values.dump_record(resource, record)
    end
  end

  # Plain creates (`c:Ash.DataLayer.bulk_create/3` without `upsert?`; bulk upserts are
  # `AshGenServer.Upsert.bulk_upsert/3`): the batch is created whole or not at all (see the
  # moduledoc). Its error is the first failing record's.
  @doc false
  def bulk_create(resource, changesets, options) do
    prepared = Enum.map(changesets, &prepare_new(resource, &1))

    case Enum.find(prepared, &match?({:error, _, _}, &1)) do
      {:error, error, _changeset} -> {:error, error}
      nil -> create_all(resource, prepared, options)
    end
  end

  # Update atomics (`atomic_update`) on a plain create have no stored record to apply to
  # (`create_atomics` are in the record already): refuse, never store the attribute without them.
  defp prepare_new(resource, changeset) do
    case dump_new(resource, changeset) do
      {:ok, _stored} when changeset.atomics not in [nil, []] ->
        error =
          Ash.Error.Invalid.AtomicsNotSupported.exception(
            resource: resource,
            action_type: :create
          )

        {:error, error, changeset}

      {:ok, stored} ->
        {:ok, stored, changeset}

      {:error, error} ->
        {:error, error, changeset}
    end
  end

  defp create_all(resource, prepared, options) do
    to_send = for {:ok, stored, _} <- prepared, do: stored
    target = Requests.target(resource, options[:tenant])
    request = {:bulk_create, target, to_send, %{all_or_nothing: true}}
    context = [resource: resource, request: :bulk_create]

    case Requests.request(resource, request) do
      # The node refused the whole batch because of its `n`th record: that record's error, as
      # a `create` of it would have answered.
      {:error, {:record, n, reason}} when is_integer(n) ->
        Requests.result({:error, reason}, Keyword.put(context, :request, :create))

      reply ->
        expect = &(is_list(&1) and length(&1) == length(to_send))

        with {:ok, replies} <- Requests.result(reply, [expect: expect] ++ context) do
          prepared |> merge_replies(replies, resource) |> bulk_result(options)
        end
    end
  end

  defp merge_replies([], _replies, _resource), do: []

  defp merge_replies([{:error, error, changeset} | rest], replies, resource),
    do: [{:error, error, changeset} | merge_replies(rest, replies, resource)]

  defp merge_replies([{:ok, _stored, changeset} | rest], [reply | replies], resource) do
    result =
      with {:ok, stored} <- Requests.result(reply, resource: resource, request: :create),
           {:ok, record} <- Values.cast_record(resource, stored) do
        {:ok, record, changeset}
      else
        {:error, error} -> {:error, error, changeset}
      end

    [result | merge_replies(rest, replies, resource)]
  end

  @doc false
  def bulk_result(results, options) do
    {ok, failed} =
      Enum.reduce(results, {[], []}, fn
        {:ok, record, changeset}, {ok, failed} ->
          if Ash.Resource.get_metadata(record, :upsert_skipped) == true and
               !options[:return_skipped_upsert?] do
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
      # A batch of one record that failed: its error, as a data layer without partial success
      # gives (Ash counts any `{:partial_success, ...}` as a success, even with no record).
      match?([{:error, _, _}], results) -> {:error, elem(hd(failed), 0)}
      failed != [] -> {:partial_success, failed, if(options[:return_records?], do: ok, else: [])}
      options[:return_records?] -> {:ok, ok}
      true -> :ok
    end
  end
end
