defmodule AshApp.LifetimeTest do
  @moduledoc "Inactivity timeouts, maximum lifetimes, keep-alive, and destroy hooks run on expiry."
  use AshApp.Case, async: false

  defp session!(label \\ "s") do
    Session |> Ash.Changeset.for_create(:create, %{owner: self(), label: label}) |> Ash.create!()
  end

  # Runs `fun` every 50 ms until `ms` have passed.
  defp every_50ms_for(ms, fun) do
    stop_at = System.monotonic_time(:millisecond) + ms

    Stream.repeatedly(fn ->
      Process.sleep(50)
      fun.()
    end)
    |> Enum.take_while(fn _ -> System.monotonic_time(:millisecond) < stop_at end)
  end

  test "an inactive record expires and its destroy action runs" do
    session = session!()
    id = session.id
    assert exists_on_node?(session)

    assert_receive {:destroyed, Session, ^id, :inactivity_timeout}, 3_000
    wait_until(fn -> not exists_on_node?(session) end)

    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Query.NotFound{}]}} =
             Ash.get(Session, id)

    # the hook wrote to another resource too
    assert [%{resource: Session, record_id: ^id, reason: :inactivity_timeout}] =
             ExpiryLog |> Ash.Query.filter(record_id == ^id) |> Ash.read!()
  end

  test "touching a record (a read or an update) resets its inactivity timer" do
    session = session!()
    id = session.id

    # 600 ms of activity, every 50 ms, against a 200 ms timeout
    every_50ms_for(600, fn -> Ash.get!(Session, id) end)

    refute_received {:destroyed, Session, ^id, _}
    assert exists_on_node?(session)
    assert_receive {:destroyed, Session, ^id, :inactivity_timeout}, 3_000
  end

  test "keep_alive keeps a record without reading it" do
    session = session!()
    id = session.id

    every_50ms_for(600, fn -> AshGenServer.keep_alive(session) end)

    refute_received {:destroyed, Session, ^id, _}
    assert exists_on_node?(session)

    # once the keep-alives stop, it expires
    assert_receive {:destroyed, Session, ^id, :inactivity_timeout}, 3_000
    wait_until(fn -> not exists_on_node?(session) end)
  end

  test "a record expires at its maximum lifetime however busy it is" do
    token = Token |> Ash.Changeset.for_create(:create, %{owner: self()}) |> Ash.create!()
    id = token.id
    started = System.monotonic_time(:millisecond)

    # keep touching it; the lifetime (300 ms) does not reset
    result =
      Stream.repeatedly(fn ->
        Process.sleep(30)
        AshGenServer.keep_alive(token)

        receive do
          {:destroyed, Token, ^id, reason} -> {:done, reason}
        after
          0 -> :alive
        end
      end)
      |> Enum.find(fn result ->
        result != :alive or System.monotonic_time(:millisecond) - started > 3_000
      end)

    assert {:done, :maximum_lifetime} = result
    assert System.monotonic_time(:millisecond) - started >= 300
    wait_until(fn -> not exists_on_node?(token) end)

    assert [%{reason: :maximum_lifetime}] =
             ExpiryLog |> Ash.Query.filter(record_id == ^id) |> Ash.read!()
  end

  test "expiries run concurrently through the destroy action" do
    sessions = for i <- 1..5, do: session!("s#{i}")

    for %{id: id} <- sessions do
      assert_receive {:destroyed, Session, ^id, :inactivity_timeout}, 3_000
    end

    wait_until(fn -> Ash.count!(Session) == 0 end)
    assert Ash.count!(ExpiryLog) == 5
  end

  test "a slow expiry hook does not hold up the others" do
    %{id: slow} = session!("slow")
    %{id: fast} = session!("fast")

    assert_receive {:destroyed, Session, first, :inactivity_timeout}, 3_000
    assert first == fast
    assert_receive {:destroyed, Session, ^slow, :inactivity_timeout}, 3_000
  end

  test "an ordinary destroy runs the same action, without an expiry reason" do
    session = session!()
    id = session.id
    assert :ok = Ash.destroy(session)
    assert_receive {:destroyed, Session, ^id, nil}, 1_000
  end
end
