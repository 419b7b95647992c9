defmodule AshGenServer.NodesTest do
  use ExUnit.Case, async: false

  alias AshGenServer.Nodes

  test "configured: nodes when a non-empty list, else node" do
    node = Application.get_env(:ash_gen_server, :node)
    nodes = Application.get_env(:ash_gen_server, :nodes)

    on_exit(fn ->
      Application.put_env(:ash_gen_server, :node, node)
      Application.put_env(:ash_gen_server, :nodes, nodes)
    end)

    Application.put_env(:ash_gen_server, :node, :"one@127.0.0.1")
    Application.put_env(:ash_gen_server, :nodes, [])
    assert Nodes.configured() == :"one@127.0.0.1"

    Application.put_env(:ash_gen_server, :nodes, [:"a@127.0.0.1", :"b@127.0.0.1"])
    assert Nodes.configured() == [:"a@127.0.0.1", :"b@127.0.0.1"]
  end

  test "failover moves to the next node of the list, once per failed node, and wraps around" do
    nodes = for n <- 1..3, do: :"nodes_test_#{n}_#{System.unique_integer([:positive])}@127.0.0.1"
    [a, b, c] = nodes

    # none reachable: the first one
    assert Nodes.current(nodes) == a
    assert Nodes.failover(nodes, a) == b
    assert Nodes.current(nodes) == b
    # a late failure of `a` does not move on from `b`
    assert Nodes.failover(nodes, a) == b
    assert Nodes.failover(nodes, b) == c
    assert Nodes.failover(nodes, c) == a
    assert Nodes.current(:"single@127.0.0.1") == :"single@127.0.0.1"
  end
end
