defmodule AshGenServer.Error.NodeUnavailable do
  @moduledoc """
  The Ash error returned when the Rust node holding a resource's records cannot be reached.

  It covers a node that is down or unknown to EPMD (`:noconnection`), a node that is up but does
  not run the `ash_gen_server` server (`:noproc`), a call that timed out (`:timeout`) and a
  resource with no node configured at all (`:no_node_configured`), and a cluster member that
  answered `{error, {unavailable, Message}}` (`{:unavailable, message}`: the cluster has no
  leader). Its class is `:framework`, so
  Ash wraps it in an `Ash.Error.Framework`.
  """
  use Splode.Error, fields: [:node, :resource, :reason], class: :framework

  def message(%{node: nil, resource: resource}) do
    "No ash_gen_server node is configured for #{inspect(resource)}: set `node` in its " <>
      "`gen_server` DSL section, `config :ash_gen_server, node: ...` or " <>
      "`config :ash_gen_server, nodes: [...]`"
  end

  def message(%{node: node, resource: resource, reason: {:unavailable, message}})
      when is_binary(message) do
    "ash_gen_server node #{inspect(node)} could not serve the request#{for_resource(resource)}: " <>
      message
  end

  def message(%{node: node, resource: resource, reason: reason}) do
    "ash_gen_server node #{inspect(node)} is unreachable#{for_resource(resource)}: " <>
      describe(reason)
  end

  defp for_resource(nil), do: ""
  defp for_resource(resource), do: " (resource #{inspect(resource)})"

  defp describe(:timeout), do: "the call timed out"
  defp describe(:noproc), do: "the node is up but runs no `ash_gen_server` server"

  defp describe(reason) when reason in [:noconnection, :nodedown],
    do: "could not connect to it (is it running, with the same cookie?)"

  defp describe({:nodedown, _}),
    do: "could not connect to it (is it running, with the same cookie?)"

  defp describe(reason), do: inspect(reason)
end
