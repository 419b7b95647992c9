defmodule AshGenServer.Nodes do
  @moduledoc """
  Which node to call when several are configured: `config :ash_gen_server, nodes: [a, b, c]`,
  the members of one cluster of Rust nodes (docs/OPERATIONS.md "Clustering"), any of which
  serves any request.

  - `configured/0` is what the application environment names: the `nodes:` list when it is a
    non-empty list, else the single `node:` (unchanged from before `nodes:` existed), else `nil`.
  - `current/1` is the node of a list in use: the cached choice, else the first node of the list
    that is connected or can be connected to (else the first one). The choice is cached in
    `:persistent_term` under `{#{inspect(__MODULE__)}, nodes}`, so it is shared by every process
    of this VM and changes only on a failover.
  - `failover/2` marks the node in use down after a call to it exited with `:noconnection` or
    `:noproc`: the next node of the list (after the last one, the first again) becomes the one
    in use. `AshGenServer.Transport` calls it and retries the request once on that node.

  This module knows nothing of requests or of Ash.
  """

  @doc """
  The node (or list of nodes) the application environment names: `config :ash_gen_server,
  nodes: [...]` when it is a non-empty list, else `config :ash_gen_server, node: ...`, else `nil`.
  """
  @spec configured() :: node | [node] | nil
  def configured do
    case Application.get_env(:ash_gen_server, :nodes) do
      [_ | _] = nodes -> nodes
      _ -> Application.get_env(:ash_gen_server, :node)
    end
  end

  @doc "The node of `nodes` in use (see the moduledoc); a single node is itself."
  @spec current(node | [node]) :: node
  def current(node) when is_atom(node), do: node
  def current([node]), do: node

  def current([first | _] = nodes) do
    case :persistent_term.get(key(nodes), nil) do
      nil ->
        node = Enum.find(nodes, first, &reachable?/1)
        :persistent_term.put(key(nodes), node)
        node

      node ->
        node
    end
  end

  @doc """
  Marks `failed` down: when it is still the node of `nodes` in use, the next node of the list
  becomes the one in use. Returns the node in use afterwards (another process may have failed
  over first).
  """
  @spec failover([node], node) :: node
  def failover(nodes, failed) when is_list(nodes) do
    case current(nodes) do
      ^failed ->
        next = next(nodes, failed)
        :persistent_term.put(key(nodes), next)
        next

      node ->
        node
    end
  end

  defp next(nodes, failed) do
    case Enum.drop_while(nodes, &(&1 != failed)) do
      [_failed, next | _] -> next
      _ -> hd(nodes)
    end
  end

  defp reachable?(node), do: node in Node.list(:connected) or Node.connect(node) == true

  defp key(nodes), do: {__MODULE__, nodes}
end
