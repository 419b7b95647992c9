defmodule AshApp.SupervisionTest do
  @moduledoc "Record actors: restarts with the last committed state, max restarts, monitors and links."
  # Needs the node to run with --enable-fault-injection (test_helper.exs starts it so).
  use AshApp.Case, async: false

  defp fragile!(value) do
    Fragile |> Ash.Changeset.for_create(:create, %{value: value}) |> Ash.create!()
  end

  defp fault(record, kind \\ :panic) do
    {:ok, pk} = AshGenServer.stored_primary_key(record)
    node_call({:fault, Fragile, pk, kind})
  end

  test "a crashed record restarts with its last updated state, under a new pid" do
    record = fragile!(1)
    {:ok, updated} = record |> Ash.Changeset.for_update(:update, %{value: 2}) |> Ash.update()
    {:ok, pid} = AshGenServer.whereis(updated)
    ref = Process.monitor(pid)

    assert {:error, {:record_crashed, _reason}} = fault(updated)
    assert_receive {:DOWN, ^ref, :process, ^pid, reason}, 2_000
    assert reason != :normal

    assert %{value: 2} =
             wait_until(fn ->
               match?({:ok, _}, Ash.get(Fragile, record.id)) && Ash.get!(Fragile, record.id)
             end)

    {:ok, new_pid} = AshGenServer.whereis(updated)
    assert new_pid != pid
    assert node(new_pid) == rust_node()
  end

  test "an internal error restarts the record too" do
    record = fragile!(7)
    assert {:error, {:record_crashed, _}} = fault(record, :error)
    assert %{value: 7} = Ash.get!(Fragile, record.id)
  end

  test "a record that keeps failing is removed after max_restarts" do
    record = fragile!(1)

    # max_restarts 2 within 10 s: the third failure is one too many
    for _ <- 1..2 do
      assert {:error, {:record_crashed, _}} = fault(record)
      assert Ash.get!(Fragile, record.id)
    end

    {:ok, pid} = AshGenServer.whereis(record)
    ref = Process.monitor(pid)
    assert {:error, {:record_crashed, _}} = fault(record)
    assert_receive {:DOWN, ^ref, :process, ^pid, _reason}, 2_000

    wait_until(fn -> match?({:error, _}, Ash.get(Fragile, record.id)) end)
    refute exists_on_node?(record)
  end

  test "monitors get :DOWN with reason :normal on destroy" do
    record = fragile!(1)
    {:ok, pid} = AshGenServer.whereis(record)
    ref = Process.monitor(pid)
    :ok = Ash.destroy(record)
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 2_000
  end

  test "monitors get :DOWN on expiry" do
    session = Session |> Ash.Changeset.for_create(:create, %{owner: self()}) |> Ash.create!()
    {:ok, pid} = AshGenServer.whereis(session)
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, reason}, 3_000
    assert reason in [:normal, {:shutdown, :inactivity_timeout}]
  end

  test "monitoring a pid that is already gone gives :noproc" do
    record = fragile!(1)
    {:ok, pid} = AshGenServer.whereis(record)
    :ok = Ash.destroy(record)
    wait_until(fn -> not exists_on_node?(record) end)
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, :noproc}, 2_000
  end

  test "the record's pid answers the record protocol" do
    record = fragile!(1)
    {:ok, pid} = AshGenServer.whereis(record)
    assert {:ok, %{value: 1}} = GenServer.call(pid, :get)
    assert {:ok, %{value: 5}} = GenServer.call(pid, {:update, %{value: 5}})
    assert %{value: 5} = Ash.get!(Fragile, record.id)
  end

  test "a linked process gets the record's exit, and the record restarts" do
    record = fragile!(3)
    {:ok, pid} = AshGenServer.whereis(record)
    test = self()

    watcher =
      spawn(fn ->
        Process.flag(:trap_exit, true)
        Process.link(pid)
        send(test, :linked)

        receive do
          {:EXIT, ^pid, reason} -> send(test, {:record_exit, reason})
        end
      end)

    assert_receive :linked, 1_000
    Process.exit(pid, :boom)
    assert_receive {:record_exit, :boom}, 2_000
    refute Process.alive?(watcher)

    assert %{value: 3} = Ash.get!(Fragile, record.id)
    {:ok, new_pid} = AshGenServer.whereis(record)
    assert new_pid != pid
  end

  test "a linked process that dies takes the record down with it (then it restarts)" do
    record = fragile!(4)
    {:ok, pid} = AshGenServer.whereis(record)
    ref = Process.monitor(pid)
    test = self()

    spawn(fn ->
      Process.link(pid)
      send(test, :linked)

      receive do
        :die -> exit(:linked_failure)
      end
    end)
    |> then(fn linker ->
      assert_receive :linked, 1_000
      send(linker, :die)
    end)

    assert_receive {:DOWN, ^ref, :process, ^pid, :linked_failure}, 2_000

    assert %{value: 4} =
             wait_until(fn ->
               match?({:ok, _}, Ash.get(Fragile, record.id)) && Ash.get!(Fragile, record.id)
             end)
  end
end
