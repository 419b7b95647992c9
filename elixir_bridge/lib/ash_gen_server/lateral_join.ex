defmodule AshGenServer.LateralJoin do
  @moduledoc """
  Lateral joins (`c:Ash.DataLayer.run_query_with_lateral_join/4`): a relationship query run for
  each parent on its own, so that its sort, offset and limit apply per parent. Ash uses them to
  load a relationship with a page (`load: [posts: Ash.Query.page(...)]`) or a limit, a
  relationship whose filter refers to `parent(...)`, and `from_many?` relationships.

  Ash hands the data layer the destination query, the parents (`root_data`) and the path from
  the parents to the destination: one link `{source_query, source_attribute,
  destination_attribute, relationship}` for a `has_many`/`has_one`/`belongs_to`, two for a
  `many_to_many` (parent → join resource → destination), as for `Ash.DataLayer.Ets`; this
  module follows a path of any length. What it does:

  1. the parents are read again with the path's source query (one read: their primary keys),
     as Ets does, and each later link's resource is read once for all of them (`in` on the
     values the previous link reached, e.g. the join records of a `many_to_many`), each row
     stitched back to its parents by Ash's equality of the linking attribute's type (so a
     `ci_string` key matches case-insensitively); the values reached are cast to the type of
     the attribute they are compared with first, as Ash's filter would cast them;
  2. the destination records of every parent come from **one** request to the node: when the
     query's filter and sort are the node's wholly (`AshGenServer.Query.plan/1`) and the
     parents' values are ones it compares exactly, a partitioned `query`
     (PROTOCOL.md, "Partitioned queries": `partition_by` the destination attribute, one
     partition per parent) in which the node sorts and pages each parent's records; otherwise
     the records related to any parent (`in` on their values, plus what the node evaluates of
     the filter) are read once, and each parent's are filtered (with `parent:` set to the
     parent, so `parent(...)` works), sorted, made distinct and paged by Ash;
  3. every record gets `__lateral_join_source__`, its parent's primary key, and the
     query's aggregates and calculations (`AshGenServer.Query.add_loaded/2`).

  A relationship without attributes (`no_attributes? true`) relates every destination record
  matching its filter to every parent: step 2's second way, without the `in`.

  The node refuses a partitioned reply larger than both the records it matched and its
  `--max-records-per-request` (partitions sharing values repeat records): a `many_to_many` page
  load whose parents share related records can hit that only past 100,000 records in all by
  default, and then fails with that error rather than reading them another way.
  """

  require Ash.Query

  alias AshGenServer.{Aggregates, Filter, Query, Results, Values}
  alias AshGenServer.DataLayer.{Layout, Requests}

  @doc """
  Whether a lateral join over these resources (source, through resources, destination) can
  run here: every one of them must be on this data layer, none with `lateral_joins_in_node?
  false` (DSL).
  """
  @spec supported?([Ash.Resource.t()], module) :: boolean
  def supported?(resources, data_layer) do
    resources != [] and
      Enum.all?(resources, fn resource ->
        Ash.DataLayer.data_layer(resource) == data_layer and
          Layout.get(resource).lateral_joins_in_node?
      end)
  end

  @doc "Runs the lateral join (`c:Ash.DataLayer.run_query_with_lateral_join/4`)."
  @spec run(Query.t(), [Ash.Resource.record()], [tuple]) ::
          {:ok, [Ash.Resource.record()]} | {:error, term}
  def run(%Query{} = query, root_data, [{source_query, _, _, relationship} | _] = path) do
    source_query = internal(source_query, query.domain)
    primary_key = Ash.Resource.Info.primary_key(source_query.resource)

    with {:ok, parents} <- read_parents(source_query, root_data, path, primary_key),
         {:ok, reached} <- follow(path, parents, query.domain) do
      parents =
        parents
        |> Enum.map(&{&1, Map.take(&1, primary_key)})
        |> Enum.zip(reached)

      if match?([_], path) and Map.get(relationship, :no_attributes?) do
        per_parent(query, parents, nil, :error)
      else
        {_, _, dest_name, _} = List.last(path)
        dest = Ash.Resource.Info.attribute(query.resource, dest_name)
        {keys, reached} = Enum.unzip(parents)
        related(query, Enum.zip(keys, cast_to(dest, reached)), dest)
      end
    end
  end

  @doc """
  Query aggregates over the records of a lateral join, without its sort and page
  (`c:Ash.DataLayer.run_aggregate_query_with_lateral_join/5`; Ash counts the records of a
  relationship page this way when asked for the next page of one parent's): the records are read
  as `run/3` reads them and the aggregates computed here (`AshGenServer.Aggregates.compute/3`).
  """
  @spec run_aggregates(Query.t(), [Ash.Query.Aggregate.t()], [Ash.Resource.record()], [tuple]) ::
          {:ok, map} | {:error, term}
  def run_aggregates(%Query{} = query, aggregates, root_data, path) do
    unpaged = %{query | sort: [], offset: 0, limit: nil, aggregates: [], calculations: []}

    with {:ok, records} <- run(unpaged, root_data, path) do
      Aggregates.compute(records, aggregates, query.domain)
    end
  end

  defp internal(query, domain) do
    query
    |> Ash.Query.unset([:load, :page])
    |> Ash.Query.set_context(%{private: %{internal?: true}})
    |> Ash.Query.set_domain(domain)
  end

  # The parents read again through the path's source query (its filters, tenant...), as Ets
  # does: by primary key, or by the source attribute when there is none.
  defp read_parents(source_query, root_data, [{_, source_attribute, _, _} | _], primary_key) do
    source_query =
      case primary_key do
        [] ->
          values = Enum.map(root_data, &Map.get(&1, source_attribute))
          Ash.Query.filter(source_query, ^Ash.Expr.ref(source_attribute) in ^values)

        [field] ->
          values = Enum.map(root_data, &Map.get(&1, field))
          Ash.Query.filter(source_query, ^Ash.Expr.ref(field) in ^values)

        fields ->
          Ash.Query.do_filter(source_query,
            or: Enum.map(root_data, &[and: &1 |> Map.take(fields) |> Map.to_list()])
          )
      end

    Ash.Actions.Read.unpaginated_read(source_query, nil, authorize?: false)
  end

  # For each parent (in order), the values it reaches that the destination attribute must
  # equal: its own source attribute for a one-link path; through the join records for a
  # `many_to_many`. One read per later link, for all parents.
  defp follow([{_, source_attribute, destination_attribute, _} | rest], parents, domain) do
    reached = Enum.map(parents, &List.wrap(Map.get(&1, source_attribute)))
    follow_links(rest, destination_attribute, reached, domain)
  end

  defp follow_links([], _link_attribute, reached, _domain), do: {:ok, reached}

  # `link_name` (the previous link's destination attribute) is an attribute of this link's
  # resource: the rows whose value equals one a parent reached take it on to `next_attribute`.
  defp follow_links(
         [{link_query, next_attribute, destination_attribute, _} | rest],
         link_name,
         reached,
         domain
       ) do
    link_query = internal(link_query, domain)
    link_attribute = Ash.Resource.Info.attribute(link_query.resource, link_name)
    reached = cast_to(link_attribute, reached)

    case reached |> List.flatten() |> Enum.uniq() do
      [] ->
        follow_links(rest, destination_attribute, reached, domain)

      values ->
        link_query
        |> Ash.Query.filter(^Ash.Expr.ref(link_name) in ^values)
        |> Ash.read(authorize?: false)
        |> case do
          {:ok, rows} ->
            rows_of = matcher(link_attribute, rows)

            reached =
              Enum.map(reached, fn values ->
                values
                |> Enum.flat_map(rows_of)
                |> Enum.uniq()
                |> Enum.map(&Map.get(&1, next_attribute))
                |> Enum.reject(&is_nil/1)
              end)

            follow_links(rest, destination_attribute, reached, domain)

          {:error, error} ->
            {:error, error}
        end
    end
  end

  # Each parent's values cast to the type of the attribute they are compared with, as Ash's
  # filter `attribute in ^values` casts them (a ci_string key compared with a uuid, say); a
  # value that does not cast equals nothing.
  defp cast_to(attribute, reached) do
    Enum.map(reached, fn values ->
      Enum.flat_map(values, fn value ->
        case Ash.Type.cast_input(attribute.type, value, attribute.constraints) do
          {:ok, nil} -> []
          {:ok, value} -> [value]
          _ -> []
        end
      end)
    end)
  end

  # The destination records of each parent, `{{parent, primary_key}, values}`: in the node,
  # sorted and paged per parent, when it can; else read once and finished by Ash per parent.
  defp related(query, parents, dest) do
    filter = Filter.translate(query.filter, query.resource)
    sort = if Query.distinct?(query), do: :error, else: Filter.sort(query.sort, query.resource)
    natives = natives(parents, dest)

    cond do
      Enum.all?(parents, fn {_, values} -> values == [] end) ->
        {:ok, []}

      filter.exact? and sort != :error and natives != :error ->
        in_node(query, parents, dest, filter, sort, natives)

      true ->
        per_parent(query, parents, dest, natives)
    end
  end

  # Each parent's values as the destination stores them, or :error if any is not one the node
  # compares exactly (floats included: partitions are by exact equality, `in` by `==`).
  defp natives(_parents, %{type: Ash.Type.Float}), do: :error

  defp natives(parents, dest) do
    Results.map_ok(parents, fn {_, values} ->
      Results.map_ok(values, fn value ->
        case Values.dump_comparable(dest, value) do
          {:ok, native} -> {:ok, native}
          :error -> {:error, :not_comparable}
        end
      end)
    end)
    |> case do
      {:ok, natives} -> natives
      {:error, _} -> :error
    end
  end

  # One partitioned query: a partition per parent (keyed by its position).
  defp in_node(query, parents, dest, filter, {:ok, sort}, natives) do
    all = natives |> List.flatten() |> Enum.uniq()

    request = %{
      filter: Filter.to_request(Filter.and_({:in, dest.name, all}, filter.expr)),
      sort: sort,
      offset: query.offset || 0,
      limit: query.limit
    }

    partitions = natives |> Enum.with_index() |> Enum.map(fn {values, i} -> {i, values} end)
    keys = parents |> Enum.map(fn {{_parent, key}, _} -> key end) |> List.to_tuple()

    with {:ok, partitions} <-
           Requests.run(
             query.resource,
             {:query, Query.target(query), request,
              %{partition_by: dest.name, partitions: partitions}},
             request: :query,
             expect: &is_list/1
           ),
         {:ok, records} <-
           Results.map_ok(partitions, fn {i, stored} ->
             with {:ok, records} <- Values.cast_records(query.resource, stored) do
               {:ok, Enum.map(records, &tag(&1, elem(keys, i)))}
             end
           end) do
      Query.add_loaded(List.flatten(records), query)
    end
  end

  # One read of the records related to any parent (what the node evaluates of the filter,
  # and `in` on the parents' values when it compares them), then each parent's records
  # filtered (with `parent:`), sorted and paged by Ash. `dest` nil: no attributes, every
  # record is related to every parent.
  defp per_parent(query, parents, dest, natives) do
    filter = Filter.translate(query.filter, query.resource)

    link =
      case {dest, natives} do
        {nil, _} -> true
        {_, :error} -> true
        {dest, natives} -> {:in, dest.name, natives |> List.flatten() |> Enum.uniq()}
      end

    request = %{
      filter: Filter.to_request(Filter.and_(link, filter.expr)),
      sort: [],
      offset: 0,
      limit: nil
    }

    with {:ok, stored} <-
           Query.fetch(query.resource, Query.target(query), {:query, request}, query.timeout),
         {:ok, candidates} <- Values.cast_records(query.resource, stored),
         records_of = if(dest, do: matcher(dest, candidates)),
         {:ok, records} <-
           Results.map_ok(parents, fn {{parent, key}, values} ->
             mine =
               if records_of,
                 do: values |> Enum.flat_map(records_of) |> Enum.uniq(),
                 else: candidates

             with {:ok, mine} <-
                    Query.maybe_runtime_filter(mine, query, not filter.exact?, parent: parent) do
               {:ok,
                mine
                |> Query.maybe_runtime_sort(query, true)
                |> Query.maybe_page(query, true)
                |> Enum.map(&tag(&1, key))}
             end
           end) do
      Query.add_loaded(List.flatten(records), query)
    end
  end

  defp tag(record, key), do: Map.put(record, :__lateral_join_source__, key)

  # A function from a value to the rows whose `attribute` equals it by Ash's equality of the
  # attribute's type (a map lookup when the type has comparable keys).
  defp matcher(attribute, rows) do
    case key_fn(attribute.type) do
      nil ->
        fn value ->
          Enum.filter(rows, &Ash.Type.equal?(attribute.type, Map.get(&1, attribute.name), value))
        end

      key ->
        index = Enum.group_by(rows, &key.(Map.get(&1, attribute.name)))
        fn value -> Map.get(index, key.(value), []) end
    end
  end

  defp key_fn(type) do
    cond do
      Ash.Type.simple_equality?(type) ->
        & &1

      Ash.Type.simple_equality_comparable?(type) ->
        &Ash.Type.to_simple_equality_comparable(type, &1)

      true ->
        nil
    end
  end
end
