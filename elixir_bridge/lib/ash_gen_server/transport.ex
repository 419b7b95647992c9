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
  - Every call is a `:telemetry.span/3` named `[:ash_gen_server, :request]`: the events
    `[:ash_gen_server, :request, :start]` and `[:ash_gen_server, :request, :stop]` (measurement
    `duration`, in native time units) carry the metadata `node`, `resource` (the resource the
    request is about, or `nil`), `request` (its name: `:get`, `:query`, `:aggregate`...) and
    `message` (the whole request); the stop event adds `reply` (the node's raw reply, or the
    error returned for an unreachable node). Casts (`keep_alive`) emit nothing.
  - With `call/4`, the values of the resource's `sensitive?` attributes are left out of
    `message` and `reply` (replaced by `:redacted`, in records and in filter comparisons alike).
  """

  alias AshGenServer.Error.NodeUnavailable

  @server :ash_gen_server
  @event [:ash_gen_server, :request]

  @doc """
  A `GenServer.call` to the node's `ash_gen_server`, with exits turned into
  `{:error, %NodeUnavailable{}}`. Returns the node's raw reply. `resource` is the resource the
  request is about, for the telemetry metadata, the redaction of its sensitive attributes and
  the error (else the request's second element when it is an atom).
  """
  @spec call(node, term, timeout, Ash.Resource.t() | nil) :: term
  def call(node, request, timeout \\ 5_000, resource \\ nil) do
    unavailable = fn reason ->
      {:error, NodeUnavailable.exception(node: node, resource: resource, reason: reason)}
    end

    span(node, request, timeout, resource, sensitive(resource), unavailable)
  end

  @doc """
  A `GenServer.call` of `request` to `to` — a node (its `ash_gen_server`) or a pid (a record's
  actor, PROTOCOL.md "Record processes") — for callers that know nothing of Ash: no resource
  lookup, no redaction. Returns the raw reply or, when the call exits, `unavailable.(reason)`,
  `reason` being `:noconnection` (node down or unknown), `:noproc` (no such server or process),
  `:timeout` or the exit reason. The telemetry span is `call/4`'s.
  """
  @spec raw_call(node | pid, term, timeout, (term -> term)) :: term
  def raw_call(to, request, timeout, unavailable) do
    span(to, request, timeout, nil, nil, unavailable)
  end

  defp span(to, request, timeout, resource, sensitive, unavailable) do
    metadata = %{
      node: if(is_pid(to), do: node(to), else: to),
      resource: resource || request_resource(request),
      request: request_name(request),
      message: redact(request, sensitive)
    }

    :telemetry.span(@event, metadata, fn ->
      reply = do_call(to, request, timeout, unavailable)
      {reply, Map.put(metadata, :reply, redact(reply, sensitive))}
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
  # changes) and in filter comparisons `{Op, Field, Value}`.
  def redact(term, nil), do: term

  def redact(term, sensitive) when is_map(term) and not is_struct(term) do
    Map.new(term, fn {key, value} ->
      if MapSet.member?(sensitive, key),
        do: {key, :redacted},
        else: {key, redact(value, sensitive)}
    end)
  end

  def redact({op, field, _value} = term, sensitive) when op in @comparisons and is_atom(field) do
    if MapSet.member?(sensitive, field), do: {op, field, :redacted}, else: term
  end

  def redact(term, sensitive) when is_tuple(term) do
    term |> Tuple.to_list() |> Enum.map(&redact(&1, sensitive)) |> List.to_tuple()
  end

  def redact(term, sensitive) when is_list(term), do: Enum.map(term, &redact(&1, sensitive))
  def redact(term, _sensitive), do: term

  @doc "A `GenServer.cast` to the node's `ash_gen_server` (no reply, no telemetry)."
  @spec cast(node, term) :: :ok
  def cast(node, request), do: GenServer.cast({@server, node}, request)

  defp do_call(to, request, timeout, unavailable) do
    GenServer.call(server(to), request, timeout)
  catch
    :exit, reason -> unavailable.(exit_reason(reason))
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
