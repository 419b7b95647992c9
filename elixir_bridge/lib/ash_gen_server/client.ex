defmodule AshGenServer.Client do
  @moduledoc """
  The whole protocol of the node (the repository's `docs/PROTOCOL.md`) for Elixir code without
  Ash: one function per request, with typed results.

      alias AshGenServer.Client

      :ok = Client.define(:user, primary_key: [:id], inactivity_timeout: :timer.minutes(5))
      {:ok, _} = Client.create(:user, %{id: 1, name: "ann", age: 40})
      {:ok, [%{id: 1}]} = Client.query(:user, filter: {:gt, :age, 30}, sort: [age: :desc])
      {:error, %Client.Error{reason: :not_found}} = Client.get(:user, %{id: 2})

  Resources here are plain atoms (or `{resource, tenant}` for a tenant's namespace, see
  PROTOCOL.md "Terms"); records, primary keys and changes are maps with atom keys; filters and
  value expressions are the protocol's tuples (`{:eq, :name, "ann"}`,
  `{:+, {:ref, :count}, {:value, 1}}`). Nothing is translated: what you send is what the node
  stores and what it answers is what you get.

  ## Results

  Every function answers `:ok`, `{:ok, value}` (for `upsert/3`, `{:ok, :created | :updated |
  :skipped, record}`) or `{:error, %AshGenServer.Client.Error{}}`, never an exit: a node that
  is down, a timeout and an unexpected reply are errors too. Match on the error's `reason`
  (the node's reason, e.g. `:not_found` or `{:unknown_resource, r}`, or
  `{:node_unavailable, why}`); its message says what happened in words. Functions ending in
  `!` are not provided: `raise` the error if you want an exception.

  ## Options

  Every function takes, last, a keyword list with:

  - `:node` — the node to ask (default: `config :ash_gen_server, node: ...`);
  - `:timeout` — of the call, in ms or `:infinity` (default: `config :ash_gen_server,
    call_timeout: ...`, else 5000).

  plus the request's own options where it has some (`query/2`'s `:filter`, `:sort`...). An
  unknown option raises `ArgumentError`.

  ## Telemetry

  Every call is the `[:ash_gen_server, :request]` telemetry span of `AshGenServer.Transport`
  (metadata `node`, `resource`, `request`, `message` and, on stop, `reply`).

  This module and `AshGenServer.Client.Error` use only Elixir, `:telemetry` and
  `AshGenServer.Transport`: they work in a VM where Ash is not loaded at all.
  """

  alias AshGenServer.Client.Error
  alias AshGenServer.Transport

  @typedoc "A resource (any atom), or `{resource, tenant}`: the tenant's namespace of it."
  @type resource :: atom | {atom, term}

  @typedoc "A record: a map with atom keys."
  @type record :: %{optional(atom) => term}

  @typedoc "The primary-key fields of a record (other fields are ignored)."
  @type primary_key :: %{optional(atom) => term}

  @typedoc "A filter expression (PROTOCOL.md \"Filter expressions\"), e.g. `{:eq, :name, \"ann\"}`."
  @type filter :: term

  @typedoc "A value expression (PROTOCOL.md \"Value expressions\"), e.g. `{:ref, :count}`."
  @type value_expr :: term

  @typedoc "Sort direction (PROTOCOL.md \"query\")."
  @type direction ::
          :asc | :desc | :asc_nils_first | :asc_nils_last | :desc_nils_first | :desc_nils_last

  @typedoc "The options every function takes."
  @type call_option :: {:node, node} | {:timeout, timeout}

  @typedoc """
  The options selecting records: `query/2`'s, also used by `aggregate/3` and the `_where`
  requests.
  """
  @type query_option ::
          {:filter, filter | nil}
          | {:sort, [{atom, direction}]}
          | {:offset, non_neg_integer}
          | {:limit, non_neg_integer | nil}
          | {:select, [atom] | nil}

  @typedoc """
  An aggregate of `aggregate/3`: `{name, kind}` (count, exists), `{name, kind, field}` or
  `{name, kind, field, opts}`.
  """
  @type aggregate ::
          {atom, aggregate_kind}
          | {atom, aggregate_kind, atom | nil}
          | {atom, aggregate_kind, atom | nil,
             %{optional(:uniq | :include_nil | :default) => term} | keyword}

  @typedoc "What `aggregate/3` computes (PROTOCOL.md \"aggregate\")."
  @type aggregate_kind :: :count | :exists | :sum | :avg | :min | :max | :first | :list

  @typedoc "A failure (see `AshGenServer.Client.Error`)."
  @type error :: {:error, Error.t()}

  @call_keys [:node, :timeout]
  @query_keys [:filter, :sort, :offset, :limit, :select]

  ## Resources

  @doc """
  Defines `resource` on the node (PROTOCOL.md "define"), or updates its options.

  `definition` (keyword or map) holds `:primary_key` (required, a non-empty list of fields) and
  optionally `:inactivity_timeout` and `:maximum_lifetime` (ms or `:infinity`), `:identities`
  (`[{name, [field]}]` or `[{name, [field], %{where: filter, nils_distinct: boolean}}]`),
  `:types` (`%{field => :date | :time | :naive_datetime | :datetime | :decimal | :ci_string}`),
  `:max_restarts`, `:max_seconds` and `:expiry_grace`; the node checks them and answers
  `{:bad_request, message}` when one is wrong. Defining again with another primary key while
  the resource holds records is `{:primary_key_mismatch, old}`.
  """
  @spec define(atom, keyword | map, [call_option]) :: :ok | error
  def define(resource, definition, opts \\ []) do
    opts = options!(opts, [])
    run({:define, resource, Map.new(definition)}, opts, &(&1 == :ok))
  end

  @doc """
  What the node knows of `resource` (PROTOCOL.md "info"): its `primary_key`, record `count`,
  `inactivity_timeout`, `maximum_lifetime`, `identities`... `{:unknown_resource, resource}` if it
  is not defined.
  """
  @spec info(resource, [call_option]) :: {:ok, map} | error
  def info(resource, opts \\ []) do
    run({:info, resource}, options!(opts, []), &match?({:ok, %{}}, &1))
  end

  @doc "The resources defined on the node (PROTOCOL.md \"resources\")."
  @spec resources([call_option]) :: {:ok, [atom]} | error
  def resources(opts \\ []) do
    run(:resources, options!(opts, []), &match?({:ok, list} when is_list(list), &1))
  end

  @doc """
  Removes every record of `resource` (of every tenant too; of one tenant with
  `{resource, tenant}`), without expiry notices (PROTOCOL.md "clear"). Answers how many were
  removed.
  """
  @spec clear(resource, [call_option]) :: {:ok, non_neg_integer} | error
  def clear(resource, opts \\ []) do
    run({:clear, resource}, options!(opts, []), &match?({:ok, n} when is_integer(n), &1))
  end

  ## Records

  @doc """
  Creates `record` (PROTOCOL.md "create"), which must hold every primary-key field; answers the
  stored record. `{:already_exists, pk}` when the key is taken, `{:identity_conflict, name,
  values}` when an identity is.
  """
  @spec create(resource, record, [call_option]) :: {:ok, record} | error
  def create(resource, record, opts \\ []) do
    run({:create, resource, record}, options!(opts, []), &record?/1)
  end

  @doc """
  Creates `record`, or updates the record that has its values for the `:keys` (PROTOCOL.md
  "upsert"); answers what happened and the record.

  Options: `:keys` (default the primary key; else the fields of an identity), `:fields`
  (the fields of `record` written on update, default `:all`), `:set` (a map written instead of
  `:fields`), `:condition` (a filter the existing record must match, else `:skipped`) and
  `:atomics` (`[{field, value_expr}]` evaluated against the existing record; `{:incoming,
  field}` reads `record`'s value).
  """
  @spec upsert(resource, record, [call_option | {atom, term}]) ::
          {:ok, :created | :updated | :skipped, record} | error
  def upsert(resource, record, opts \\ []) do
    {upsert, opts} = split!(opts, [:keys, :fields, :set, :condition, :atomics])
    run({:upsert, resource, record, upsert}, opts, &upsert_reply?/1)
  end

  @doc """
  Creates (or with `upsert: true`, upserts) each of `records`, in order and independently
  (PROTOCOL.md "bulk_create"). Answers one result per record, in order: `{:ok, record}` (or
  `{:ok, :created | :updated | :skipped, record}` when upserting) or `{:error,
  %AshGenServer.Client.Error{}}`. With `upsert: true`, `upsert/3`'s options apply to every
  record.
  """
  @spec bulk_create(resource, [record], [call_option | {atom, term}]) ::
          {:ok, [{:ok, record} | {:ok, atom, record} | error]} | error
  def bulk_create(resource, records, opts \\ []) do
    {bulk, opts} = split!(opts, [:upsert, :keys, :fields, :set, :condition, :atomics])
    request = {:bulk_create, resource, records, bulk}

    with {:ok, node} <- node(opts, :bulk_create),
         {:ok, results} <- run(request, [{:node, node} | opts], &records?/1) do
      {:ok,
       Enum.map(results, fn
         {:error, reason} -> {:error, error(reason, node, request)}
         result -> result
       end)}
    end
  end

  @doc "The record with primary key `pk` (PROTOCOL.md \"get\"); `:not_found` if there is none."
  @spec get(resource, primary_key, [call_option]) :: {:ok, record} | error
  def get(resource, pk, opts \\ []) do
    run({:get, resource, pk}, options!(opts, []), &record?/1)
  end

  @doc """
  Merges `changes` into the record with primary key `pk` (PROTOCOL.md "update"); answers the
  updated record. Changing primary-key fields re-keys it.

  Options: `:filter`, which the record must match, checked atomically by its actor (else
  `:stale`, nothing changed: optimistic locking), and `:atomics`, `[{field, value_expr}]`
  evaluated against the record before the update and merged after `changes`
  (`[count: {:+, {:ref, :count}, {:value, 1}}]` increments exactly under any concurrency; a
  failing expression is `{:expr_error, term}`).
  """
  @spec update(resource, primary_key, map, [call_option | {atom, term}]) ::
          {:ok, record} | error
  def update(resource, pk, changes, opts \\ []) do
    {update, opts} = split!(opts, [:filter, :atomics])

    request =
      if update == %{},
        do: {:update, resource, pk, changes},
        else: {:update, resource, pk, changes, update}

    run(request, opts, &record?/1)
  end

  @doc """
  Destroys the record with primary key `pk` (PROTOCOL.md "destroy"). Option `:filter`: destroy
  only if the record matches it (else `:stale`).
  """
  @spec destroy(resource, primary_key, [call_option | {:filter, filter}]) :: :ok | error
  def destroy(resource, pk, opts \\ []) do
    {destroy, opts} = split!(opts, [:filter])

    request =
      if destroy == %{}, do: {:destroy, resource, pk}, else: {:destroy, resource, pk, destroy}

    run(request, opts, &(&1 == :ok))
  end

  ## Queries

  @doc """
  The records matching a query, run inside the node in one call (PROTOCOL.md "query"): filter,
  then sort, then offset, then limit.

  Options: `:filter` (default every record), `:sort` (`[{field, direction}]`, e.g.
  `[age: :desc]`), `:offset`, `:limit` and `:select` (the fields to return, plus the primary
  key). Without `:sort` the order is unspecified (primary-key order with an offset or limit).
  """
  @spec query(resource, [call_option | query_option]) :: {:ok, [record]} | error
  def query(resource, opts \\ []) do
    {query, opts} = split!(opts, @query_keys)
    run({:query, resource, query}, opts, &records?/1)
  end

  @doc """
  Aggregates over the records matching a query (PROTOCOL.md "aggregate"): answers
  `%{name => value}`, or with `group_by: field`, `[{group_value, %{name => value}}]` in term
  order of the groups.

  `aggregates` are `{name, kind}` (`:count`, `:exists`), `{name, kind, field}` or
  `{name, kind, field, opts}` with `opts` among `uniq: true`, `include_nil: true`,
  `default: value`. Options: `query/2`'s and `:group_by`.

      {:ok, %{n: 2, oldest: 40}} =
        Client.aggregate(:user, [{:n, :count}, {:oldest, :max, :age}], filter: {:gt, :age, 30})
  """
  @spec aggregate(resource, [aggregate], [call_option | query_option | {:group_by, atom}]) ::
          {:ok, %{atom => term} | [{term, %{atom => term}}]} | error
  def aggregate(resource, aggregates, opts \\ []) do
    {query, opts} = split!(opts, @query_keys ++ [:group_by])
    {group_by, query} = Map.pop(query, :group_by)
    specs = Enum.map(aggregates, &aggregate_spec/1)

    request =
      if group_by == nil,
        do: {:aggregate, resource, query, specs},
        else: {:aggregate, resource, query, specs, %{group_by: group_by}}

    expect = if group_by == nil, do: &match?({:ok, %{}}, &1), else: &records?/1
    run(request, opts, expect)
  end

  defp aggregate_spec({name, kind}), do: {name, kind, nil, %{}}
  defp aggregate_spec({name, kind, field}), do: {name, kind, field, %{}}
  defp aggregate_spec({name, kind, field, opts}), do: {name, kind, field, Map.new(opts)}

  @doc """
  Updates every record matching a query, each in its own actor's turn where the filter is
  checked again (PROTOCOL.md "update_where"). Answers the updated records in the query's order,
  or with `return: :count` their number.

  Options: `query/2`'s, `:set` (a map of changes), `:atomics` (`[{field, value_expr}]`) and
  `:return` (`:records`, the default, or `:count`).
  """
  @spec update_where(resource, [call_option | query_option | {atom, term}]) ::
          {:ok, [record] | non_neg_integer} | error
  def update_where(resource, opts \\ []) do
    {query, opts} = split!(opts, @query_keys ++ [:set, :atomics, :return])
    {update, query} = Map.split(query, [:set, :atomics, :return])
    run({:update_where, resource, query, update}, opts, &records_or_count?/1)
  end

  @doc """
  Destroys every record matching a query (PROTOCOL.md "destroy_where"). Answers the destroyed
  records as they were, or with `return: :count` their number. Options: `query/2`'s and
  `:return`.
  """
  @spec destroy_where(resource, [call_option | query_option | {:return, :records | :count}]) ::
          {:ok, [record] | non_neg_integer} | error
  def destroy_where(resource, opts \\ []) do
    {query, opts} = split!(opts, @query_keys ++ [:return])
    {destroy, query} = Map.split(query, [:return])
    run({:destroy_where, resource, query, destroy}, opts, &records_or_count?/1)
  end

  ## Record processes and lifetimes

  @doc """
  The pid of the record's actor on the node (PROTOCOL.md "whereis"), to monitor or link to
  like any process, or to pass to `record_get/2` and the other `record_` functions.
  """
  @spec whereis(resource, primary_key, [call_option]) :: {:ok, pid} | error
  def whereis(resource, pk, opts \\ []) do
    run({:whereis, resource, pk}, options!(opts, []), &match?({:ok, pid} when is_pid(pid), &1))
  end

  @doc """
  Resets the record's inactivity timer without reading it, as a call (PROTOCOL.md
  "keep_alive"): `:not_found` if there is no such record. `cast_keep_alive/3` does the same
  without waiting.
  """
  @spec keep_alive(resource, primary_key, [call_option]) :: :ok | error
  def keep_alive(resource, pk, opts \\ []) do
    run({:keep_alive, resource, pk}, options!(opts, []), &(&1 == :ok))
  end

  @doc """
  `keep_alive/3` as a cast: no reply, no error, no telemetry (a missing record is ignored by
  the node). Answers `:ok`, or the error of a missing `:node`.
  """
  @spec cast_keep_alive(resource, primary_key, [{:node, node}]) :: :ok | error
  def cast_keep_alive(resource, pk, opts \\ []) do
    opts = options!(opts, [])

    with {:ok, node} <- node(opts, :keep_alive) do
      Transport.cast(node, {:keep_alive, resource, pk})
    end
  end

  @doc """
  Makes the calling process an expiry handler (PROTOCOL.md "subscribe", "Lifetimes"): of every
  resource (`:all`) or of the listed ones (subscribing again replaces the list). It then
  receives `{:ash_gen_server, :expired, %{node: _, resource: _, tenant: _, primary_key: _,
  record: _, reason: :inactivity_timeout | :maximum_lifetime}}` and is expected to destroy the
  record (the node removes it itself after the resource's `expiry_grace`).
  `subscribe(node: node)` is `subscribe(:all, node: node)`.
  """
  @spec subscribe(:all | [atom] | [call_option], [call_option]) :: :ok | error
  def subscribe(resources \\ :all, opts \\ [])
  def subscribe([{_, _} | _] = opts, []), do: subscribe(:all, opts)

  def subscribe(resources, opts) do
    request = if resources == :all, do: :subscribe, else: {:subscribe, resources}
    run(request, options!(opts, []), &(&1 == :ok))
  end

  @doc "Stops the calling process from being an expiry handler (PROTOCOL.md \"unsubscribe\")."
  @spec unsubscribe([call_option]) :: :ok | error
  def unsubscribe(opts \\ []) do
    run(:unsubscribe, options!(opts, []), &(&1 == :ok))
  end

  @doc """
  The record, asked of its actor `pid` (from `whereis/3`; PROTOCOL.md "Record processes").
  A pid whose record is gone is `{:node_unavailable, :noproc}`.
  """
  @spec record_get(pid, [{:timeout, timeout}]) :: {:ok, record} | error
  def record_get(pid, opts \\ []) when is_pid(pid) do
    run_on(pid, :get, options!(opts, [], [:timeout]), &record?/1)
  end

  @doc """
  Merges `changes` into the record of actor `pid`; option `:filter` as for `update/4`.
  """
  @spec record_update(pid, map, [{:timeout, timeout} | {:filter, filter}]) ::
          {:ok, record} | error
  def record_update(pid, changes, opts \\ []) when is_pid(pid) do
    {update, opts} = split!(opts, [:filter], [:timeout])
    request = if update == %{}, do: {:update, changes}, else: {:update, changes, update}
    run_on(pid, request, opts, &record?/1)
  end

  @doc "Destroys the record of actor `pid` (its monitors then get `'DOWN'` with `:normal`)."
  @spec record_destroy(pid, [{:timeout, timeout}]) :: :ok | error
  def record_destroy(pid, opts \\ []) when is_pid(pid) do
    run_on(pid, :destroy, options!(opts, [], [:timeout]), &(&1 == :ok))
  end

  @doc "Resets the inactivity timer of the record of actor `pid` (a cast; always `:ok`)."
  @spec record_keep_alive(pid) :: :ok
  def record_keep_alive(pid) when is_pid(pid), do: GenServer.cast(pid, :keep_alive)

  ## The node

  @doc "`:pong` when the node's `ash_gen_server` answers (PROTOCOL.md \"ping\")."
  @spec ping([call_option]) :: :pong | error
  def ping(opts \\ []) do
    run(:ping, options!(opts, []), &(&1 == :pong))
  end

  @doc """
  The node's counters (PROTOCOL.md "stats"): `records`, `resources`, `connections`, `peers`,
  `record_pids`, `processes`, `monitors`, `pending_replies`, `expiry_handlers`, `uptime_ms`,
  `instance_id` (changes when the node restarts), `rss_bytes`...
  """
  @spec stats([call_option]) :: {:ok, map} | error
  def stats(opts \\ []) do
    run(:stats, options!(opts, []), &match?({:ok, %{}}, &1))
  end

  @doc """
  What `ash-gen-server status` shows, as data: `%{node: node, stats: stats, resources:
  %{resource => info}}`, from `stats/1`, `resources/1` and `info/2` of each resource (a
  resource removed meanwhile is left out).
  """
  @spec status([call_option]) ::
          {:ok, %{node: node, stats: map, resources: %{atom => map}}} | error
  def status(opts \\ []) do
    opts = options!(opts, [])

    with {:ok, node} <- node(opts, :status),
         opts = Keyword.put(opts, :node, node),
         {:ok, stats} <- stats(opts),
         {:ok, names} <- resources(opts),
         {:ok, infos} <- infos(names, opts) do
      {:ok, %{node: node, stats: stats, resources: infos}}
    end
  end

  defp infos(names, opts) do
    Enum.reduce_while(names, {:ok, %{}}, fn name, {:ok, acc} ->
      case info(name, opts) do
        {:ok, info} -> {:cont, {:ok, Map.put(acc, name, info)}}
        {:error, %Error{reason: {:unknown_resource, _}}} -> {:cont, {:ok, acc}}
        error -> {:halt, error}
      end
    end)
  end

  @doc """
  Makes the record's actor fail while handling the request (PROTOCOL.md "fault injection"; tests
  of supervision only): `fault` is `:panic`, `:error` or `{:after_change, changes}`. Answers
  `{:error, %Error{reason: {:record_crashed, reason}}}`, or `:fault_injection_disabled` unless
  the node was started with `--enable-fault-injection`.
  """
  @spec fault(resource, primary_key, :panic | :error | {:after_change, map}, [call_option]) ::
          error
  def fault(resource, pk, fault, opts \\ []) do
    run({:fault, resource, pk, fault}, options!(opts, []), fn _reply -> false end)
  end

  @doc """
  Sends any request term to the node's `ash_gen_server` and answers its raw reply, for what
  this module has no function for. Only an unreachable node is turned into
  `{:error, %AshGenServer.Client.Error{}}`.
  """
  @spec call(term, [call_option]) :: term
  def call(request, opts \\ []) do
    opts = options!(opts, [])

    with {:ok, node} <- node(opts, request_name(request)) do
      Transport.raw_call(node, request, timeout(opts), &unavailable(&1, node, request))
    end
  end

  ## Internals

  # Sends `request` to the node of `opts`; a reply for which `expect?` holds is answered as it
  # is, a `{:error, reason}` reply becomes an `Error`, anything else an unexpected reply.
  defp run(request, opts, expect?) do
    with {:ok, node} <- node(opts, request_name(request)) do
      node |> exchange(request, opts) |> result(node, request, expect?)
    end
  end

  defp run_on(pid, request, opts, expect?) do
    pid |> exchange(request, opts) |> result(pid, request, expect?)
  end

  defp exchange(to, request, opts),
    do: Transport.raw_call(to, request, timeout(opts), &unavailable(&1, to, request))

  defp result({:error, %Error{}} = error, _to, _request, _expect?), do: error

  defp result(reply, to, request, expect?) do
    cond do
      expect?.(reply) -> reply
      match?({:error, _}, reply) -> {:error, error(elem(reply, 1), to, request)}
      true -> {:error, error({:unexpected_reply, reply}, to, request)}
    end
  end

  defp unavailable(reason, to, request),
    do: {:error, error({:node_unavailable, reason}, to, request)}

  defp error(reason, to, request) do
    %Error{
      reason: reason,
      node: to,
      request: request_name(request),
      resource: if(is_pid(to), do: nil, else: request_resource(request))
    }
  end

  defp request_name(request) when is_tuple(request), do: elem(request, 0)
  defp request_name(request), do: request

  defp request_resource(request) when is_tuple(request) and tuple_size(request) > 2,
    do: elem(request, 1)

  defp request_resource({name, resource}) when name in [:info, :clear], do: resource
  defp request_resource(_request), do: nil

  defp node(opts, request) do
    case Keyword.get(opts, :node) || Application.get_env(:ash_gen_server, :node) do
      node when is_atom(node) and node != nil ->
        {:ok, node}

      _ ->
        {:error, %Error{reason: :no_node_configured, request: request}}
    end
  end

  defp timeout(opts) do
    Keyword.get_lazy(opts, :timeout, fn ->
      Application.get_env(:ash_gen_server, :call_timeout, 5_000)
    end)
  end

  # `opts` checked against the call options plus `extra`; raises on an unknown key.
  defp options!(opts, extra, call_keys \\ @call_keys) do
    Keyword.validate!(opts, call_keys ++ extra)
  end

  # The request's own options (`keys`) as a map, and the call options.
  defp split!(opts, keys, call_keys \\ @call_keys) do
    opts = options!(opts, keys, call_keys)
    {own, call} = Keyword.split(opts, keys)
    {Map.new(own), call}
  end

  defp record?(reply), do: match?({:ok, %{}}, reply)
  defp records?(reply), do: match?({:ok, list} when is_list(list), reply)

  defp records_or_count?({:ok, n}) when is_integer(n), do: true
  defp records_or_count?(reply), do: records?(reply)

  defp upsert_reply?({:ok, action, %{}}) when action in [:created, :updated, :skipped], do: true
  defp upsert_reply?(_reply), do: false
end
