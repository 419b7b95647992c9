defmodule AshGenServer.TransportTest do
  use ExUnit.Case, async: true

  alias AshGenServer.Error.NodeUnavailable
  alias AshGenServer.Test.Thing
  alias AshGenServer.Transport

  # handlers run in the process that emits the event: keep this test's own calls
  @doc false
  def forward(event, measurements, metadata, pid) do
    if self() == pid, do: send(pid, {event, measurements, metadata})
  end

  test "every call is a telemetry span naming the request and the resource" do
    id = {__MODULE__, make_ref()}
    events = [[:ash_gen_server, :request, :start], [:ash_gen_server, :request, :stop]]
    :ok = :telemetry.attach_many(id, events, &__MODULE__.forward/4, self())
    on_exit(fn -> :telemetry.detach(id) end)

    request = {:get, Thing, %{id: "x"}}
    assert {:error, %NodeUnavailable{}} = Transport.call(:"nowhere@127.0.0.1", request, 100)

    assert_receive {[:ash_gen_server, :request, :start], %{system_time: _},
                    %{node: :"nowhere@127.0.0.1", resource: Thing, request: :get} = start}

    assert start.message == request

    assert_receive {[:ash_gen_server, :request, :stop], %{duration: duration},
                    %{request: :get, resource: Thing, reply: {:error, %NodeUnavailable{}}}}

    assert is_integer(duration)

    assert {:error, _} = Transport.call(:"nowhere@127.0.0.1", :stats, 100)
    assert_receive {[:ash_gen_server, :request, :stop], _, %{request: :stats, resource: nil}}
  end

  test "redact: sensitive values in records, comparisons, atomics and value expressions" do
    sensitive = MapSet.new([:secret])

    request =
      {:update_where, Thing, %{filter: {:and, {:eq, :secret, "s1"}, {:eq, :name, "n"}}},
       %{
         set: %{secret: "s2", name: "n"},
         atomics: [
           secret: {:concat, [{:value, "s3"}, {:ref, :name}]},
           label: {:concat, [{:ref, :secret}, {:value, "s4"}]},
           count: {:+, {:ref, :count}, {:value, 1}}
         ]
       }}

    assert Transport.redact(request, sensitive) ==
             {:update_where, Thing,
              %{filter: {:and, {:eq, :secret, :redacted}, {:eq, :name, "n"}}},
              %{
                set: %{secret: :redacted, name: "n"},
                atomics: [
                  secret: {:concat, [{:value, :redacted}, {:ref, :name}]},
                  label: {:concat, [{:ref, :secret}, {:value, :redacted}]},
                  count: {:+, {:ref, :count}, {:value, 1}}
                ]
              }}

    # filter expressions: literals redacted where they read a sensitive field (or an incoming one)
    condition =
      {:and, {:expr, {:eq, {:incoming, :secret}, {:value, "s5"}}},
       {:expr, {:gt, {:ref, :count}, {:value, 3}}}}

    assert Transport.redact(%{condition: condition}, sensitive) == %{
             condition:
               {:and, {:expr, {:eq, {:incoming, :secret}, {:value, :redacted}}},
                {:expr, {:gt, {:ref, :count}, {:value, 3}}}}
           }
  end

  test "raw_call: an exit is what the caller makes of its reason, in the reply and the span" do
    id = {__MODULE__, make_ref()}
    :ok = :telemetry.attach(id, [:ash_gen_server, :request, :stop], &__MODULE__.forward/4, self())
    on_exit(fn -> :telemetry.detach(id) end)

    request = {:get, :plain_atom, %{id: 1}}

    assert {:gone, :noconnection, :"nowhere@127.0.0.1"} =
             Transport.raw_call(:"nowhere@127.0.0.1", request, 100, &{:gone, &1, &2})

    assert_receive {_, _,
                    %{
                      request: :get,
                      resource: :plain_atom,
                      reply: {:gone, :noconnection, :"nowhere@127.0.0.1"}
                    }}

    # a pid: the record process is gone
    pid = spawn(fn -> :ok end)
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, _, _, _}
    assert {:gone, :noproc, ^pid} = Transport.raw_call(pid, :get, 100, &{:gone, &1, &2})

    assert_receive {_, _, %{node: node, request: :get, reply: {:gone, :noproc, _}}}
                   when node == node()
  end

  # A stand-in for a member's `ash_gen_server` on this VM: reports every message it is called
  # with. `:dies` dies at the first one as if the member were gone (`:noproc`), after
  # registering an `:answers` stand-in in its place.
  defp stand_in(test, mode, ready_to) do
    spawn(fn ->
      Process.register(self(), :ash_gen_server)
      send(ready_to, {:registered, self()})
      serve(test, mode)
    end)
  end

  defp serve(test, mode) do
    receive do
      {:"$gen_call", from, message} ->
        send(test, {:called, message})

        case mode do
          :dies ->
            Process.unregister(:ash_gen_server)
            stand_in(test, :answers, self())
            receive do: ({:registered, _} -> exit(:noproc))

          :answers ->
            GenServer.reply(from, :answered)
            serve(test, mode)
        end
    end
  end

  test "a call to a list of members carries a request id, the same on its retry" do
    # This VM as a two-member list: the failover goes from `node()` to `node()` again.
    members = [node(), node()]
    first = stand_in(self(), :dies, self())
    assert_receive {:registered, ^first}
    on_exit(fn -> if pid = Process.whereis(:ash_gen_server), do: Process.exit(pid, :kill) end)
    request = {:create, :plain_atom, %{id: 1}}

    assert :answered = Transport.raw_call(members, request, 1_000, &{:gone, &1, &2})
    assert_receive {:called, {:request_id, id, ^request}}
    assert is_integer(id) and id >= 0 and id < 0x8000000000000000
    assert_receive {:called, {:request_id, ^id, ^request}}

    # Each request its own id; a single node gets the request as it is.
    assert :answered = Transport.raw_call(members, request, 1_000, &{:gone, &1, &2})
    assert_receive {:called, {:request_id, other, ^request}}
    assert other != id
    assert :answered = Transport.raw_call(node(), request, 1_000, &{:gone, &1, &2})
    assert_receive {:called, ^request}
    refute_received {:called, _}
  end
end
