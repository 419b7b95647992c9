defmodule AshGenServer.Error.NodeError do
  @moduledoc """
  The Ash error returned when the node answers a request with an error that has no more specific
  Ash counterpart: `{bad_request, Message}`, `{unknown_request, _}`, `{record_crashed, Reason}`,
  `{primary_key_mismatch, _}` and anything unexpected. It keeps the raw reason in `:reason`.
  """
  use Splode.Error, fields: [:node, :resource, :request, :reason], class: :unknown

  def message(%{node: node, resource: resource, request: request, reason: reason}) do
    "ash_gen_server node #{inspect(node)} refused #{inspect(request)}" <>
      "#{if resource, do: " on #{inspect(resource)}", else: ""}: #{describe(reason)}"
  end

  defp describe({:bad_request, message}) when is_binary(message), do: "bad request: " <> message
  defp describe({:record_crashed, reason}), do: "the record crashed: #{inspect(reason)}"

  defp describe({:primary_key_mismatch, old}),
    do: "the resource is already defined there with primary key #{inspect(old)}"

  defp describe(reason), do: inspect(reason)
end
