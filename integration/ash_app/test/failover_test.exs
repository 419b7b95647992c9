defmodule AshApp.FailoverTest do
  @moduledoc """
  `config :ash_gen_server, nodes: [...]`: a cluster of three real Rust nodes (`--cluster`, the
  others `--join` the first); the member in use is SIGKILLed and Ash goes on through the others.
  """
  use AshApp.Case, async: false

  alias AshApp.RustNode
  alias AshGenServer.{ExpiryHandler, Nodes}

  setup do
    # A member draining on SIGTERM asks the cluster to remove it, which a cluster with a dead
    # member cannot commit: the drain then ends at the shutdown timeout (3 s here, inside
    # RustNode's 10 s), and the member must still exit 0.
    members = RustNode.start_cluster!(3, ["--shutdown-timeout", "3"])
    on_exit(fn -> Enum.each(members, &RustNode.stop/1) end)

    previous = Application.fetch_env(:ash_gen_server, :nodes)
    Application.put_env(:ash_gen_server, :nodes, members)

    on_exit(fn ->
      case previous do
        {:ok, value} -> Application.put_env(:ash_gen_server, :nodes, value)
        :error -> Application.delete_env(:ash_gen_server, :nodes)
      end
    end)

    {:ok, members: members}
  end

  defp create!(name) do
    Author |> Ash.Changeset.for_create(:create, %{name: name}) |> Ash.create!()
  end

  defp ids(records), do: MapSet.new(records, & &1.id)

  test "reads and writes go on through the other members when the member in use is killed",
       %{members: [first, _, _] = members} do
    created = for i <- 1..5, do: create!("before #{i}")
    # the first member, reachable, is the one in use; the records are on the cluster, not on
    # the suite's own node
    assert Nodes.current(members) == first
    refute exists_on_node?(hd(created))
    assert Author in Map.fetch!(ExpiryHandler.subscriptions(), first)

    assert RustNode.kill(first) == 137

    # a read first: it fails over to the next member
    assert ids(Ash.read!(Author)) == ids(created)
    in_use = Nodes.current(members)
    assert in_use != first

    # writes: creates, an update, a destroy
    more = for i <- 1..5, do: create!("after #{i}")
    [renamed | _] = created
    renamed |> Ash.Changeset.for_update(:update, %{name: "renamed"}) |> Ash.update!()
    [gone | more] = more
    :ok = Ash.destroy!(gone)

    assert ids(Ash.read!(Author)) == ids(created ++ more)
    assert Ash.get!(Author, renamed.id).name == "renamed"
    assert Nodes.current(members) == in_use

    # the expiry handler subscribed again, on the member now in use
    wait_until(fn -> Author in Map.get(ExpiryHandler.subscriptions(), in_use, []) end, 10_000)

    assert_stopped(members, [first])
  end

  test "a cluster without a leader answers unavailable, an Ash Unavailable error",
       %{members: [first, second, third]} do
    created = create!("kept")
    # no majority left: the third member cannot get a read served (it waits up to 10 s)
    assert RustNode.kill(first) == 137
    assert RustNode.kill(second) == 137

    timeout = Application.get_env(:ash_gen_server, :call_timeout)
    Application.put_env(:ash_gen_server, :call_timeout, 30_000)
    on_exit(fn -> Application.put_env(:ash_gen_server, :call_timeout, timeout) end)

    # Each read fails over once: from `first` to `second` (down too: unreachable), then from
    # `second` to the third, which answers that it has no leader. (The expiry handler's own
    # failover on `nodedown` may have moved on already, so one read may suffice.)
    messages =
      Enum.reduce_while(1..3, [], fn _, messages ->
        assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Invalid.Unavailable{} = error]}} =
                 Ash.get(Author, created.id)

        message = Exception.message(error)

        if message =~ "could not serve the request",
          do: {:halt, [message | messages]},
          else: {:cont, [message | messages]}
      end)

    assert [served | unreachable] = messages
    assert served =~ "could not serve the request"
    assert Enum.all?(unreachable, &(&1 =~ "unreachable"))

    assert_stopped([first, second, third], [first, second])
  end

  # The members still running stop on SIGTERM with exit status 0; the SIGKILLed ones ended 137.
  defp assert_stopped(members, killed) do
    statuses = for member <- members, do: {member, RustNode.stop(member)}

    expected =
      for member <- members,
          do: {member, if(member in killed, do: {:already_exited, 137}, else: 0)}

    assert statuses == expected
  end
end
