defmodule AshApp.NoPrimaryKeyTest do
  @moduledoc """
  A resource without a primary key (`AshApp.Reading`): the node keys its records by a hidden
  generated key (`AshGenServer.Values.hidden_key/0`), so every create is a new record, equal
  values included. Reads, filters, sorts, pages, aggregates, bulk creates and relationship
  loads work as for any resource; updates and destroys are not offered (as on Ets); the record's
  actor is found through the key kept in its metadata, and an expired record is destroyed raw.
  """
  use AshApp.Case, async: false

  defp reading!(attrs), do: Reading |> Ash.Changeset.for_create(:create, attrs) |> Ash.create!()

  test "the node keys the resource by the hidden field" do
    reading!(%{celsius: 1.0})
    assert {:ok, %{primary_key: [key], count: 1}} = node_call({:info, Reading})
    assert key == AshGenServer.Values.hidden_key()
  end

  test "equal readings are distinct records, read back without the hidden field" do
    first = reading!(%{celsius: 21.5})
    second = reading!(%{celsius: 21.5})

    assert first.__metadata__.ash_gen_server_key != second.__metadata__.ash_gen_server_key
    records = Ash.read!(Reading)
    assert Enum.map(records, & &1.celsius) == [21.5, 21.5]
    refute Enum.any?(records, &Map.has_key?(&1, AshGenServer.Values.hidden_key()))

    assert records |> Enum.map(& &1.__metadata__.ash_gen_server_key) |> Enum.sort() ==
             Enum.sort([
               first.__metadata__.ash_gen_server_key,
               second.__metadata__.ash_gen_server_key
             ])
  end

  test "filters, sorts, pages and aggregates" do
    for c <- [5.0, 1.0, 3.0, 4.0, 2.0, 3.0], do: reading!(%{celsius: c})

    sorted = fn query -> query |> Ash.read!() |> Enum.map(& &1.celsius) end

    assert sorted.(Reading |> Ash.Query.filter(celsius >= 3.0) |> Ash.Query.sort(celsius: :desc)) ==
             [5.0, 4.0, 3.0, 3.0]

    assert sorted.(
             Reading
             |> Ash.Query.sort(celsius: :asc)
             |> Ash.Query.offset(1)
             |> Ash.Query.limit(3)
           ) ==
             [2.0, 3.0, 3.0]

    assert Ash.count!(Reading) == 6
    assert Ash.sum!(Reading, :celsius) == 18.0
    assert Ash.count!(Ash.Query.filter(Reading, celsius == 3.0)) == 2
  end

  test "bulk creates and belongs_to loads" do
    author = Author |> Ash.Changeset.for_create(:create, %{name: "ann"}) |> Ash.create!()

    result =
      Ash.bulk_create(
        [
          %{celsius: 1.0, author_id: author.id},
          %{celsius: 1.0, author_id: author.id},
          %{celsius: 2.0}
        ],
        Reading,
        :create,
        return_records?: true
      )

    assert result.status == :success
    assert length(result.records) == 3

    loaded = Reading |> Ash.Query.sort(celsius: :asc) |> Ash.Query.load(:author) |> Ash.read!()
    assert Enum.map(loaded, &(&1.author && &1.author.name)) == ["ann", "ann", nil]
  end

  test "no updates nor destroys, as on Ets" do
    for feature <- [:update, :destroy, :update_query, :destroy_query],
        do: refute(Ash.DataLayer.data_layer_can?(Reading, feature))
  end

  test "the record's actor is found by its hidden key, and an expired record is destroyed raw" do
    reading = reading!(%{celsius: 7.0})
    assert {:ok, pid} = AshGenServer.whereis(reading)
    ref = Process.monitor(pid)

    # untouched for 1 s, it expires; Ash cannot destroy it, the handler destroys it raw
    assert_receive {:DOWN, ^ref, :process, ^pid, {:shutdown, :inactivity_timeout}}, 5_000
    wait_until(fn -> match?({:ok, %{count: 0}}, node_call({:info, Reading})) end)
  end
end
