defmodule AshGenServer.Client.Error do
  @moduledoc """
  Why an `AshGenServer.Client` request failed: the node's error reply, or why the node could not
  be asked. An exception (`raise` it, or read `Exception.message/1`), returned as
  `{:error, %AshGenServer.Client.Error{}}`; it needs nothing but Elixir.

  - `reason`: what to match on. The node's own reason, exactly as PROTOCOL.md "Errors" lists
    it (`:not_found`, `:stale`, `{:already_exists, pk}`, `{:identity_conflict, name, values}`,
    `{:unknown_resource, resource}`, `{:missing_primary_key, fields}`,
    `{:primary_key_mismatch, fields}`, `{:unknown_upsert_keys, keys}`,
    `{:not_a_number, field, value}`, `{:float_overflow, field}`, `{:expr_error, term}`,
    `{:bad_request, message}`, `{:unknown_request, request}`, `{:record_crashed, reason}`,
    `:fault_injection_disabled`), or one of the client's:
    - `{:node_unavailable, why}`: the call exited, `why` being `:noconnection` (the node is
      down, unknown to EPMD, or refused this VM's cookie), `:noproc` (it runs no
      `ash_gen_server`, or the record's process is gone), `:timeout`, or the exit reason;
    - `:no_node_configured`: no `node:` option and no `config :ash_gen_server, node: ...`;
    - `{:unexpected_reply, reply}`: a reply that is not one this request can have.
  - `node`: the node (or record pid) asked; `request`: the request's name (`:get`, `:query`...);
    `resource`: the resource the request was about, when it names one.
  """

  defexception [:reason, :node, :request, :resource]

  @typedoc "See the moduledoc."
  @type t :: %__MODULE__{
          reason: term,
          node: node | pid | nil,
          request: atom | nil,
          resource: term
        }

  @impl true
  def message(%__MODULE__{reason: :no_node_configured} = error) do
    "no ash_gen_server node to send #{inspect(error.request)} to: pass `node: ...` or set " <>
      "`config :ash_gen_server, node: ...`"
  end

  def message(%__MODULE__{reason: {:node_unavailable, why}, node: to} = error)
      when is_pid(to) do
    "the record process #{inspect(to)} did not answer #{inspect(error.request)}: " <>
      unavailable(why, "the process is gone")
  end

  def message(%__MODULE__{reason: {:node_unavailable, why}} = error) do
    "ash_gen_server node #{inspect(error.node)} is unreachable: " <>
      unavailable(why, "the node is up but runs no `ash_gen_server` server")
  end

  def message(%__MODULE__{} = error) do
    on = if error.resource == nil, do: "", else: " on #{inspect(error.resource)}"

    "ash_gen_server node #{inspect(error.node)} refused #{inspect(error.request)}#{on}: " <>
      describe(error.reason)
  end

  defp unavailable(:noconnection, _noproc),
    do: "could not connect to it (is it running, with the same cookie?)"

  defp unavailable(:noproc, noproc), do: noproc
  defp unavailable(:timeout, _noproc), do: "the call timed out"
  defp unavailable(why, _noproc), do: "the call exited with #{inspect(why)}"

  defp describe(:not_found), do: "no record with that primary key"
  defp describe(:stale), do: "the record did not match the filter (stale)"
  defp describe({:already_exists, pk}), do: "a record with key #{inspect(pk)} already exists"

  defp describe({:identity_conflict, name, values}),
    do: "identity #{inspect(name)} is already taken by #{inspect(values)}"

  defp describe({:unknown_resource, resource}),
    do: "resource #{inspect(resource)} is not defined on the node (define it first)"

  defp describe({:missing_primary_key, fields}),
    do: "missing or nil primary-key field(s) #{inspect(fields)}"

  defp describe({:primary_key_mismatch, old}),
    do: "the resource is already defined there with primary key #{inspect(old)}"

  defp describe({:unknown_upsert_keys, keys}),
    do: "upsert keys #{inspect(keys)} are neither the primary key nor an identity"

  defp describe({:not_a_number, field, value}),
    do: "#{inspect(field)} holds #{inspect(value)}, not a number"

  defp describe({:float_overflow, field}), do: "the float sum of #{inspect(field)} overflowed"
  defp describe({:expr_error, term}), do: "the expression failed: #{inspect(term)}"
  defp describe({:bad_request, message}) when is_binary(message), do: "bad request: " <> message
  defp describe({:unknown_request, _request}), do: "the node does not know this request"
  defp describe({:record_crashed, reason}), do: "the record crashed: #{inspect(reason)}"

  defp describe(:fault_injection_disabled),
    do: "fault injection is disabled (start the node with --enable-fault-injection)"

  defp describe({:unexpected_reply, reply}), do: "unexpected reply #{inspect(reply)}"
  defp describe(reason), do: inspect(reason)
end
