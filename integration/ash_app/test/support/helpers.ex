defmodule AshApp.Helpers do
  @moduledoc "Bounded waiting and small helpers shared by the end-to-end tests."

  @doc """
  Calls `fun` every `interval` ms until it returns a truthy value, which is returned; fails
  the test if that does not happen within `timeout` ms.
  """
  def wait_until(fun, timeout \\ 3_000, interval \\ 10) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(fun, deadline, interval, timeout)
  end

  defp do_wait(fun, deadline, interval, timeout) do
    case fun.() do
      result when result not in [nil, false] ->
        result

      _ ->
        if System.monotonic_time(:millisecond) > deadline do
          ExUnit.Assertions.flunk("condition not met within #{timeout} ms")
        else
          Process.sleep(interval)
          do_wait(fun, deadline, interval, timeout)
        end
    end
  end

  @doc "The Rust node this suite runs against."
  def rust_node, do: Application.fetch_env!(:ash_gen_server, :node)

  @doc "A raw PROTOCOL.md call to the node (no Ash)."
  def node_call(request, timeout \\ 5_000),
    do: GenServer.call({:ash_gen_server, rust_node()}, request, timeout)

  @doc "Whether the record still exists on the node, without touching it (`whereis`)."
  def exists_on_node?(%resource{} = record) do
    {:ok, pk} = AshGenServer.stored_primary_key(record)
    match?({:ok, _pid}, node_call({:whereis, resource, pk}))
  end

  @doc "Removes every record of the given resources (`clear`, no expiry notices)."
  def clear!(resources) do
    for resource <- List.wrap(resources) do
      {:ok, _} = AshGenServer.request(resource, {:clear, resource})
    end

    :ok
  end

  @doc """
  Runs `fun` and returns `{result, requests}`: every request any process of this VM sent to a
  node meanwhile, in order, as the metadata of the bridge's `[:ash_gen_server, :request, :stop]`
  telemetry event (`resource`, `request` (the name), `message`, `reply`...).
  """
  def with_requests(fun) do
    ref = make_ref()
    id = {__MODULE__, ref}

    :ok =
      :telemetry.attach(
        id,
        [:ash_gen_server, :request, :stop],
        &__MODULE__.forward_request/4,
        {self(), ref}
      )

    try do
      result = fun.()
      {result, collect_requests(ref, [])}
    after
      :telemetry.detach(id)
    end
  end

  @doc false
  def forward_request(_event, _measurements, metadata, {pid, ref}),
    do: send(pid, {ref, metadata})

  defp collect_requests(ref, acc) do
    receive do
      {^ref, metadata} -> collect_requests(ref, [metadata | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end
end
