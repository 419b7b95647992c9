defmodule AshApp.TimeoutsTest do
  @moduledoc """
  A read's `:timeout` is the timeout of its node calls: against a node made slow (frozen with
  SIGSTOP for a while, so it answers late), a read with a long timeout waits for the answer
  although the resource's `call_timeout` is shorter, and a call that outlasts the timeout is
  Ash's `Ash.Error.Invalid.Timeout`.
  """
  use AshApp.Case, async: false

  alias AshApp.RustNode

  setup do
    parcel = Parcel |> Ash.Changeset.for_create(:create, %{name: "box"}) |> Ash.create!()
    %{parcel: parcel}
  end

  # Freezes the node for `ms`, runs `fun` meanwhile, and waits until the node answers again.
  defp while_slow(ms, fun) do
    :ok = RustNode.pause(rust_node(), ms)

    try do
      fun.()
    after
      wait_until(fn -> node_call(:ping, 10_000) == :pong end, 15_000)
    end
  end

  test "a read's long timeout is honoured past the resource's call_timeout", %{parcel: parcel} do
    # Parcel's call_timeout is 300 ms; the node answers after ~1 s
    assert {:ok, [%{name: "box"}]} =
             while_slow(1_000, fn -> Ash.read(Parcel, timeout: 20_000) end)

    assert {:ok, %{name: "box"}} =
             while_slow(1_000, fn -> Ash.get(Parcel, parcel.id, timeout: 20_000) end)

    # the read action's own timeout (3 s) too
    assert {:ok, [_]} = while_slow(1_000, fn -> Ash.read(Parcel, action: :patient) end)

    {[_], requests} = with_requests(fn -> Ash.read!(Parcel, timeout: 20_000) end)

    assert [%{request: :query}] = requests
  end

  test "a call that outlasts the timeout is Ash's Timeout error" do
    # the read's timeout
    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Invalid.Timeout{}]}} =
             while_slow(1_500, fn -> Ash.read(Parcel, timeout: 200) end)

    # no timeout given: the resource's call_timeout (300 ms)
    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Invalid.Timeout{timeout: 300}]}} =
             while_slow(1_500, fn -> Ash.read(Parcel) end)

    # the node is fine afterwards
    assert [%{name: "box"}] = Ash.read!(Parcel)
  end
end
