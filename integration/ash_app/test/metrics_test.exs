defmodule AshApp.MetricsTest do
  @moduledoc """
  The node's Prometheus endpoint (`--metrics-addr`, which `test_helper.exs` gives it), scraped
  over real HTTP while Ash works: the request counters by kind and result, the request
  histogram and the records gauge move exactly as the requests this VM sent did.
  """
  use AshApp.Case, async: false

  alias AshApp.Metrics
  alias AshApp.MeterReading, as: Reading

  @requests "ash_gen_server_requests_total"
  @durations "ash_gen_server_request_duration_seconds_count"
  @records "ash_gen_server_records"

  defp records_of_reading(scrape),
    do: Metrics.value(scrape, @records, resource: "Elixir.AshApp.MeterReading")

  # The gauges are sampled once a second: wait (bounded) for a sample showing `n` readings.
  defp await_readings(n) do
    wait_until(fn -> records_of_reading(Metrics.scrape!()) == n end, 5_000, 100)
  end

  test "requests by kind and result, their histogram and the records gauge follow Ash" do
    # define the resource (its first use) and start from no readings
    Ash.read!(Reading)
    {:ok, _} = AshGenServer.request(Reading, {:clear, Reading})
    await_readings(0)

    before = Metrics.scrape!()

    {_, requests} =
      with_requests(fn ->
        readings =
          for i <- 1..5 do
            Reading
            |> Ash.Changeset.for_create(:create, %{meter: "m#{i}", value: i})
            |> Ash.create!()
          end

        for reading <- Enum.take(readings, 3), do: Ash.get!(Reading, reading.id)

        assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Query.NotFound{}]}} =
                 Ash.get(Reading, Ash.UUID.generate())

        assert length(Ash.read!(Reading)) == 5

        for reading <- Enum.slice(readings, 0, 2),
            do: reading |> Ash.Changeset.for_update(:update, %{value: 100}) |> Ash.update!()

        for reading <- Enum.slice(readings, 3, 2), do: Ash.destroy!(reading)
      end)

    later = Metrics.scrape!()

    # what this VM sent, by the node's kind and result (a reply `{:error, _}` is an error)
    sent =
      Enum.frequencies_by(requests, fn %{request: kind, reply: reply} ->
        {to_string(kind), if(match?({:error, _}, reply), do: "error", else: "ok")}
      end)

    # the Ash calls above, as requests about Reading: one per create, get, read (query),
    # update and destroy
    about_reading =
      requests
      |> Enum.filter(&(&1.resource == Reading))
      |> Enum.frequencies_by(fn %{request: kind, reply: reply} ->
        {kind, if(match?({:error, _}, reply), do: :error, else: :ok)}
      end)

    assert about_reading == %{
             {:create, :ok} => 5,
             {:get, :ok} => 3,
             {:get, :error} => 1,
             {:query, :ok} => 1,
             {:update, :ok} => 2,
             {:destroy, :ok} => 2
           }

    deltas =
      for {{name, labels}, _} <- Map.merge(before, later), name == @requests, into: %{} do
        key = {labels["kind"], labels["result"]}
        {key, Metrics.value(later, @requests, labels) - Metrics.value(before, @requests, labels)}
      end

    counted = Map.reject(deltas, fn {_key, delta} -> delta == 0 end)

    assert counted == Map.new(sent, fn {key, n} -> {key, n * 1.0} end)

    for {kind, _result} <- Map.keys(sent) do
      n =
        sent |> Enum.filter(&match?({{^kind, _}, _}, &1)) |> Enum.map(&elem(&1, 1)) |> Enum.sum()

      assert Metrics.value(later, @durations, kind: kind) -
               Metrics.value(before, @durations, kind: kind) == n
    end

    # 5 created, 2 destroyed
    await_readings(3)
  end
end
