defmodule AshGenServer.Transport do
  @moduledoc """
  One call or cast to a node's `ash_gen_server` server (or to a record's pid): the lowest layer
  of the package, used by `AshGenServer.DataLayer.Requests` (the data layer's requests about a
  resource), `AshGenServer.ExpiryHandler` (subscriptions and raw destroys) and
  `AshGenServer.Client` (the protocol for code without Ash). It knows nothing about resources
  being defined or about Ash errors.

  - Requests go to `{:ash_gen_server, node}` with `GenServer.call/3` (PROTOCOL.md "Requests").
    An exit (node down, no server, timeout) never reaches the caller: `call/4` answers
    `{:error, %AshGenServer.Error.NodeUnavailable{}}` naming the node, `raw_call/4` what its
    caller makes of the reason.
  - `to` can be a list of nodes, the members of one cluster (`config :ash_gen_server, nodes:
    [...]`): the call goes to the node in use (`AshGenServer.Nodes.current/1`); when it exits
    with `:noconnection` (node down or unknown) or `:noproc` (no server), that node is marked
    down (`AshGenServer.Nodes.failover/2`) and the request is sent once more, to the next node
    of the list. Every call to a list goes as `{:request_id, id, request}` (PROTOCOL.md "Request
    ids"), the retry with the same random id: a write the first member passed on to the cluster
    before it died is applied once, however often it is sent. An unreachable node is the one
    of the last attempt.
  - Every call is a `:telemetry.span/3` named `[:ash_gen_server, :request]`: the events
    `[:ash_gen_server, :request, :start]` and `[:ash_gen_server, :request, :stop]` (measurement
    `duration`, in native time units) carry the metadata `node`, `resource` (the resource the
    request is about, or `nil`), `request` (its name: `:get`, `:query`, `:aggregate`...) and
    `message` (the whole request); the stop event adds `reply` (the node's raw reply, or the
    error returned for an unreachable node). Casts (`keep_alive`) emit nothing.
  - With `call/4`, the values of the resource's `sensitive?` attributes are left out of
    `message` and `reply` (replaced by `:redacted`, in records, filter comparisons and the
    literals of value expressions — atomics and `{expr, ...}` filters — alike).
  """

  alias AshGenServer.Error.NodeUnavailable
  alias AshGenServer.Nodes

  @server :ash_gen_server
  @event [:ash_gen_server, :request]
  # Request ids are below 2^63 (PROTOCOL.md "Request ids").
  @request_ids 0x8000000000000000

  @doc """
  A `GenServer.call` to the node's `ash_gen_server` (or to the node in use of a list, with one
  failover: see the moduledoc), with exits turned into `{:error, %NodeUnavailable{}}`. Returns
  the node's raw reply. `resource` is the resource the request is about, for the telemetry
  metadata, the redaction of its sensitive attributes and the error (else the request's second
  element when it is an atom).
  """
  @spec call(node | [node], term, timeout, Ash.Resource.t() | nil) :: term
  def call(to, request, timeout \\ 5_000, resource \\ nil) do
    unavailable = fn reason, node ->
      {:error, NodeUnavailable.exception(node: node, resource: resource, reason: reason)}
    end

    failover(to, request, timeout, resource, sensitive(resource), unavailable)
  end

  @doc """
  A `GenServer.call` of `request` to `to` — a node (its `ash_gen_server`), a list of nodes (as
  `call/4`, with one failover) or a pid (a record's actor, PROTOCOL.md "Record processes") — for
  callers that know nothing of Ash: no resource lookup, no redaction. Returns the raw reply or,
  when the call exits, `unavailable.(reason, to)` (`to` the node or pid of the last attempt),
  `reason` being `:noconnection` (node down or unknown), `:noproc` (no such server or process),
  `:timeout` or the exit reason. The telemetry span is `call/4`'s.
  """
  @spec raw_call(node | [node] | pid, term, timeout, (term, node | pid -> term)) :: term
  def raw_call(to, request, timeout, unavailable) do
    failover(to, request, timeout, nil, nil, unavailable)
  end

  # One span per attempt: on the node in use of a list, then (after `:noconnection` or
  # `:noproc`) on the next one.
  defp failover([_, _ | _] = nodes, request, timeout, resource, sensitive, unavailable) do
    node = Nodes.current(nodes)
    sent = {:request_id, :rand.uniform(@request_ids) - 1, request}

    case span(node, request, sent, timeout, resource, sensitive, unavailable) do
      {_reply, reason} when reason in [:noconnection, :noproc] ->
        next = Nodes.failover(nodes, node)
        {reply, _} = span(next, request, sent, timeout, resource, sensitive, unavailable)
        reply

      {reply, _} ->
        reply
    end
  end

  defp failover([node], request, timeout, resource, sensitive, unavailable),
    do: failover(node, request, timeout, resource, sensitive, unavailable)

  defp failover(to, request, timeout, resource, sensitive, unavailable) do
    {reply, _} = span(to, request, request, timeout, resource, sensitive, unavailable)
    reply
  end

  # The reply (or `unavailable.(reason, to)`) and the exit reason (`nil` when the call returned).
  # `sent` is `request` or `request` with its request id.
  defp span(to, request, sent, timeout, resource, sensitive, unavailable) do
    metadata = %{
      node: if(is_pid(to), do: node(to), else: to),
      resource: resource || request_resource(request),
      request: request_name(request),
      message: redact(request, sensitive)
    }

    :telemetry.span(@event, metadata, fn ->
      {reply, exit} =
        case do_call(to, sent, timeout) do
          {:exit, reason} -> {unavailable.(reason, to), reason}
          {:reply, reply} -> {reply, nil}
        end

      {{reply, exit}, Map.put(metadata, :reply, redact(reply, sensitive))}
    end)
  end

  defp sensitive(resource) when is_atom(resource) and not is_nil(resource) do
    case AshGenServer.DataLayer.Layout.get(resource).sensitive do
      [] -> nil
      names -> MapSet.new(names)
    end
  rescue
    _ -> nil
  end

  defp sensitive(_resource), do: nil

  @comparisons [:eq, :neq, :lt, :lte, :gt, :gte, :in, :contains]

  @doc false
  # `term` with the values of the `sensitive` fields replaced by `:redacted`: in maps (records,
  # changes), in filter comparisons `{Op, Field, Value}`, and in value expressions (PROTOCOL.md
  # "Value expressions"): every literal `{value, V}` of an atomic `{Field, VExpr}` that sets a
  # sensitive field or reads one, and of a filter `{expr, VExpr}` that reads one, becomes
  # `{value, redacted}`.
  def redact(term, nil), do: term

  def redact(term, sensitive) when is_map(term) and not is_struct(term) do
    Map.new(term, fn
      {:atomics, atomics} when is_list(atomics) ->
        {:atomics, Enum.map(atomics, &redact_atomic(&1, sensitive))}

      {key, value} ->
        if MapSet.member?(sensitive, key),
          do: {key, :redacted},
          else: {key, redact(value, sensitive)}
    end)
  end

  def redact({op, field, _value} = term, sensitive) when op in @comparisons and is_atom(field) do
    if MapSet.member?(sensitive, field), do: {op, field, :redacted}, else: term
  end

  def redact({:expr, vexpr}, sensitive) do
    if reads_sensitive?(vexpr, sensitive),
      do: {:expr, redact_literals(vexpr)},
      else: {:expr, vexpr}
  end

  def redact(term, sensitive) when is_tuple(term) do
    term |> Tuple.to_list() |> Enum.map(&redact(&1, sensitive)) |> List.to_tuple()
  end

  def redact(term, sensitive) when is_list(term), do: Enum.map(term, &redact(&1, sensitive))
  def redact(term, _sensitive), do: term

  defp redact_atomic({field, vexpr}, sensitive) when is_atom(field) do
    if MapSet.member?(sensitive, field) or reads_sensitive?(vexpr, sensitive),
      do: {field, redact_literals(vexpr)},
      else: {field, vexpr}
  end

  defp redact_atomic(other, sensitive), do: redact(other, sensitive)

  # Whether a value expression reads a sensitive field (`{ref, F}` or `{incoming, F}`).
  defp reads_sensitive?({kind, field}, sensitive) when kind in [:ref, :incoming],
    do: MapSet.member?(sensitive, field)

  defp reads_sensitive?({:value, _literal}, _sensitive), do: false

  defp reads_sensitive?(term, sensitive) when is_tuple(term),
    do: term |> Tuple.to_list() |> reads_sensitive?(sensitive)

  defp reads_sensitive?(term, sensitive) when is_list(term),
    do: Enum.any?(term, &reads_sensitive?(&1, sensitive))

  defp reads_sensitive?(_term, _sensitive), do: false

  defp redact_literals({:value, _literal}), do: {:value, :redacted}

  defp redact_literals(term) when is_tuple(term),
    do: term |> Tuple.to_list() |> Enum.map(&redact_literals/1) |> List.to_tuple()

  defp redact_literals(term) when is_list(term), do: Enum.map(term, &redact_literals/1)
  defp redact_literals(term), do: term

  @doc """
  A `GenServer.cast` to the node's `ash_gen_server` (of a list: the node in use; no reply, no
  telemetry, no failover).
  """
  @spec cast(node | [node], term) :: :ok
  def cast(to, request), do: GenServer.cast({@server, Nodes.current(to)}, request)

  defp do_call(to, request, timeout) do
    {:reply, GenServer.call(server(to), request, timeout)}
  catch
    :exit, reason -> {:exit, exit_reason(reason)}
  end

  defp server(pid) when is_pid(pid), do: pid
  defp server(node), do: {@server, node}

  defp request_name(request) when is_tuple(request) and tuple_size(request) > 0,
    do: elem(request, 0)

  defp request_name(request), do: request

  defp request_resource(request)
       when is_tuple(request) and tuple_size(request) > 1 and is_atom(elem(request, 1)),
       do: elem(request, 1)

  defp request_resource(_request), do: nil

  defp exit_reason({reason, {GenServer, :call, _}}), do: exit_reason(reason)
  defp exit_reason({:nodedown, _node}), do: :noconnection
  defp exit_reason(reason), do: reason
end
