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
end
