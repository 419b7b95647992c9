defmodule AshGenServer.DataLayer.RequestsTest do
  # not async: the tests point the application environment's node at this VM
  use ExUnit.Case, async: false

  alias AshGenServer.DataLayer.Requests
  alias AshGenServer.Error.{NodeError, NodeUnavailable}
  alias AshGenServer.Test.{Pair, Thing}

  # A stand-in for the node's `ash_gen_server`, registered in this VM: it accepts `define` and
  # `subscribe` and answers every other request with `reply`.
  defmodule FakeNode do
    use GenServer

    def start_link(reply), do: GenServer.start_link(__MODULE__, reply, name: :ash_gen_server)

    @impl true
    def init(reply), do: {:ok, reply}

    @impl true
    def handle_call({:define, _resource, _opts}, _from, reply), do: {:reply, :ok, reply}
    def handle_call({:subscribe, _resources}, _from, reply), do: {:reply, :ok, reply}
    def handle_call(_request, _from, reply), do: {:reply, reply, reply}
  end

  setup do
    previous = Application.get_env(:ash_gen_server, :node)
    Application.put_env(:ash_gen_server, :node, node())

    on_exit(fn ->
      Requests.forget(node(), Pair)

      if previous,
        do: Application.put_env(:ash_gen_server, :node, previous),
        else: Application.delete_env(:ash_gen_server, :node)
    end)
  end

  # `Requests.run/3` of a `get` of `Pair` against a node that answers `reply`.
  defp run(reply, context \\ []) do
    _ = stop_supervised(FakeNode)
    start_supervised!({FakeNode, reply})
    Requests.run(Pair, {:get, Pair, %{left: "a", right: 1}}, [request: :get] ++ context)
  end

  test "success replies are {:ok, body}" do
    assert run({:ok, %{left: "a", right: 1}}) == {:ok, %{left: "a", right: 1}}
  end

  test ":ok is {:ok, :ok}" do
    assert run(:ok) == {:ok, :ok}
  end

  test "an upsert's {:ok, action, record} is {:ok, {action, record}}" do
    assert run({:ok, :created, %{left: "a"}}) == {:ok, {:created, %{left: "a"}}}
  end

  test "error replies are the Ash errors of to_ash_error/2" do
    assert {:error, %Ash.Error.Query.NotFound{resource: Pair}} = run({:error, :not_found})

    assert {:error, %Ash.Error.Changes.StaleRecord{resource: Pair, filter: :the_filter}} =
             run({:error, :not_found}, not_found: :stale, filter: :the_filter)

    assert {:error,
            [
              %Ash.Error.Changes.InvalidAttribute{field: :left},
              %Ash.Error.Changes.InvalidAttribute{field: :right}
            ]} = run({:error, {:already_exists, %{left: "a", right: 1}}})

    assert {:error, %NodeError{resource: Pair, request: :get, reason: {:bad_request, "no"}}} =
             run({:error, {:bad_request, "no"}})
  end

  test "an unexpected reply is a NodeError holding it" do
    assert {:error, %NodeError{resource: Pair, request: :get, reason: :what}} = run(:what)
  end

  test "a body passing :expect is {:ok, body}" do
    assert run({:ok, [1]}, expect: &is_list/1) == {:ok, [1]}
  end

  test "a body failing :expect is a NodeError holding the reply" do
    assert {:error, %NodeError{reason: {:ok, :not_a_list}}} =
             run({:ok, :not_a_list}, expect: &is_list/1)
  end

  test "an unreachable node is Ash's Unavailable, a timed-out call Ash's Timeout" do
    assert {:error, %Ash.Error.Invalid.Unavailable{resource: Thing} = error} =
             Requests.run(Thing, {:get, Thing, %{id: "x"}}, request: :get)

    assert Exception.message(error) =~ "nowhere@127.0.0.1"

    timeout = NodeUnavailable.exception(node: :n@h, resource: Thing, reason: :timeout)

    assert {:error, %Ash.Error.Invalid.Timeout{timeout: 500}} =
             Requests.result({:error, timeout}, resource: Thing)
  end

  test "result/2 maps a reply without a request (per-record bulk replies)" do
    assert Requests.result({:ok, :updated, %{}}, resource: Pair) == {:ok, {:updated, %{}}}

    assert {:error, %Ash.Error.Changes.StaleRecord{}} =
             Requests.result({:error, :stale}, resource: Pair)
  end
end
