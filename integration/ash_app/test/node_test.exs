defmodule AshApp.NodeTest do
  @moduledoc "The node itself: hidden, unreachable, restarted."
  use AshApp.Case, async: false

  test "the Rust node is hidden: in Node.list(:hidden), not in Node.list()" do
    Ash.read!(Author)
    assert rust_node() in Node.list(:hidden)
    refute rust_node() in Node.list()
    assert Node.ping(rust_node()) == :pong
  end

  test "this VM's expiry handler is subscribed to the node" do
    Ash.read!(Author)
    assert rust_node() in AshGenServer.ExpiryHandler.subscribed_nodes()
    assert {:ok, %{expiry_handlers: handlers}} = node_call(:stats)
    assert handlers >= 1
  end

  test "this VM's expiry handler subscribes to the resources it defined, and only those" do
    Ash.read!(Session)
    subscribed = AshGenServer.ExpiryHandler.subscriptions() |> Map.fetch!(rust_node())
    assert Session in subscribed
    assert Author in subscribed
    # defined for AshApp.Orphan's node, which does not exist: never subscribed there
    refute Orphan in subscribed
  end

  test "the expiry handler subscribes again after the connection to the node is lost" do
    Ash.read!(Session)
    node = rust_node()
    true = Node.disconnect(node)
    wait_until(fn -> node not in Node.list(:hidden) end, 5_000)

    # reconnect without defining anything (every resource is defined already)
    assert Node.ping(node) == :pong

    wait_until(fn ->
      match?({:ok, %{expiry_handlers: 1}}, node_call(:stats)) and
        Session in Map.get(AshGenServer.ExpiryHandler.subscriptions(), node, [])
    end)

    session = Session |> Ash.Changeset.for_create(:create, %{owner: self()}) |> Ash.create!()
    session_id = session.id
    assert_receive {:destroyed, Session, ^session_id, :inactivity_timeout}, 5_000
  end

  test "a restarted expiry handler subscribes again at once" do
    Ash.read!(Session)
    old = Process.whereis(AshGenServer.ExpiryHandler)
    ref = Process.monitor(old)
    Process.exit(old, :kill)
    assert_receive {:DOWN, ^ref, :process, ^old, :killed}

    wait_until(fn ->
      pid = Process.whereis(AshGenServer.ExpiryHandler)

      pid not in [nil, old] and
        Session in Map.get(AshGenServer.ExpiryHandler.subscriptions(), rust_node(), [])
    end)

    wait_until(fn -> match?({:ok, %{expiry_handlers: 1}}, node_call(:stats)) end)
    session = Session |> Ash.Changeset.for_create(:create, %{owner: self()}) |> Ash.create!()
    session_id = session.id
    assert_receive {:destroyed, Session, ^session_id, :inactivity_timeout}, 5_000
  end

  test "the node knows the resources the shim defined" do
    Ash.read!(Author)
    assert {:ok, resources} = node_call(:resources)
    assert Author in resources
    assert {:ok, %{primary_key: [:id], identities: identities}} = node_call({:info, Author})
    assert identities == [unique_email: [:email]] or identities == [{:unique_email, [:email]}]
  end

  test "an unreachable node is a clear Ash error naming the node" do
    # (how fast is a speed figure for bench/; the test's own timeout bounds it)
    assert {:error, %Ash.Error.Invalid{errors: [error]}} = Ash.read(Orphan)
    assert %Ash.Error.Invalid.Unavailable{resource: Orphan} = error
    assert Exception.message(error) =~ "nobody_home@127.0.0.1"

    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Invalid.Unavailable{}]}} =
             Orphan |> Ash.Changeset.for_create(:create, %{name: "x"}) |> Ash.create()
  end

  test "a node that lost its definitions gets them again (restart)" do
    author = Author |> Ash.Changeset.for_create(:create, %{name: "before"}) |> Ash.create!()
    node = rust_node()

    assert AshApp.RustNode.stop(node) == 0
    wait_until(fn -> node not in Node.list(:hidden) end, 5_000)

    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Invalid.Unavailable{}]}} =
             Ash.read(Author)

    ^node = AshApp.RustNode.start!(name: node)

    # the records are gone with the old process, but the resource works again
    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Query.NotFound{}]}} =
             Ash.get(Author, author.id)

    assert %{name: "after"} =
             Author |> Ash.Changeset.for_create(:create, %{name: "after"}) |> Ash.create!()

    assert [%{name: "after"}] = Ash.read!(Author)

    # and the expiry handler subscribed again: expiry still runs the destroy action
    assert {:ok, %{expiry_handlers: 1}} = node_call(:stats)
    assert Session in Map.fetch!(AshGenServer.ExpiryHandler.subscriptions(), node)

    session = Session |> Ash.Changeset.for_create(:create, %{owner: self()}) |> Ash.create!()

    session_id = session.id
    assert_receive {:destroyed, Session, ^session_id, :inactivity_timeout}, 5_000
  end
end
