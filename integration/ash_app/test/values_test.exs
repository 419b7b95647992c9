defmodule AshApp.ValuesTest do
  @moduledoc "Every Ash type round-trips through the node, and filters on each give Ash's answer."
  use AshApp.Case, async: false

  defp attrs(n) do
    %{
      string: "héllo #{n}",
      integer: 123_456_789_012_345_678_901_234_567_890 + n,
      float: n + 0.25,
      boolean: rem(n, 2) == 0,
      atom: :"atom_#{n}",
      uuid: Ash.UUID.generate(),
      date: Date.add(~D[2024-02-28], n),
      time: ~T[23:59:58],
      utc: DateTime.add(~U[2024-01-01 00:00:00.000001Z], n, :second),
      naive: ~N[2020-05-06 07:08:09],
      decimal: Decimal.new("#{n}.10"),
      ci: "MiXeD #{n}",
      map: %{"nested" => %{"list" => [1, 2, n]}},
      strings: ["a", "b", "#{n}"],
      binary: <<0, 255, n>>,
      term: {:tuple, self(), make_ref(), [n]},
      address: %{street: "Main #{n}", zip: 10_000 + n},
      addresses: [%{street: "A", zip: 1}, %{street: "B", zip: n}]
    }
  end

  test "values come back equal to what was written" do
    input = attrs(7)
    created = Everything |> Ash.Changeset.for_create(:create, input) |> Ash.create!()
    read = Ash.get!(Everything, created.id)

    for key <- [
          :string,
          :integer,
          :float,
          :boolean,
          :atom,
          :uuid,
          :date,
          :time,
          :utc,
          :naive,
          :map,
          :strings,
          :binary,
          :term
        ] do
      assert Map.get(read, key) == Map.get(input, key), "#{key} changed"
    end

    assert Decimal.equal?(read.decimal, input.decimal)
    assert to_string(read.ci) == "MiXeD 7"
    assert %AshApp.Address{street: "Main 7", zip: 10_007} = read.address
    assert [%AshApp.Address{street: "A"}, %AshApp.Address{street: "B", zip: 7}] = read.addresses
  end

  test "filters and sorts on every comparable type agree with Ash" do
    for n <- 1..6, do: Everything |> Ash.Changeset.for_create(:create, attrs(n)) |> Ash.create!()
    big = 123_456_789_012_345_678_901_234_567_890
    ns = fn query -> query |> Ash.read!() |> Enum.map(&(&1.integer - big)) end
    sorted = fn query -> query |> ns.() |> Enum.sort() end

    assert sorted.(Ash.Query.filter(Everything, integer > ^(big + 4))) == [5, 6]
    assert sorted.(Ash.Query.filter(Everything, float > 3.0)) == [3, 4, 5, 6]
    assert sorted.(Ash.Query.filter(Everything, boolean == true)) == [2, 4, 6]
    assert sorted.(Ash.Query.filter(Everything, atom > :atom_4)) == [5, 6]
    assert sorted.(Ash.Query.filter(Everything, contains(string, "llo 2"))) == [2]
    assert sorted.(Ash.Query.filter(Everything, date >= ^~D[2024-03-02])) == [3, 4, 5, 6]
    assert sorted.(Ash.Query.filter(Everything, utc < ^~U[2024-01-01 00:00:03Z])) == [1, 2]
    assert sorted.(Ash.Query.filter(Everything, ci == "mixed 3")) == [3]
    assert ns.(Everything |> Ash.Query.sort(decimal: :desc) |> Ash.Query.limit(2)) == [6, 5]
    assert ns.(Everything |> Ash.Query.sort(string: :desc) |> Ash.Query.limit(1)) == [6]
    by_uuid = Everything |> Ash.Query.sort(uuid: :asc) |> Ash.read!() |> Enum.map(& &1.uuid)
    assert by_uuid == Enum.sort(by_uuid)
  end

  test "keyset pages on a utc_datetime: one query each, filtered, sorted and paged in the node" do
    base = ~U[2025-12-31 23:00:00Z]

    for i <- 1..10 do
      Counter
      |> Ash.Changeset.for_create(:create, %{
        name: "c#{i}",
        touched_at: DateTime.add(base, i * 600)
      })
      |> Ash.create!()
    end

    read_page = fn page_opts ->
      Counter
      |> Ash.Query.for_read(:pages)
      |> Ash.Query.filter(touched_at > ^base)
      |> Ash.Query.sort(touched_at: :desc)
      |> Ash.read!(page: page_opts)
    end

    {first, requests} = with_requests(fn -> read_page.(limit: 4) end)
    assert Enum.map(first.results, & &1.name) == ["c10", "c9", "c8", "c7"]
    assert first.more?
    # the filter, the sort and the limit (one more, to know if there are more) go to the node
    assert [%{request: :query, message: {:query, Counter, %{sort: [_ | _], limit: 5}}}] = requests

    {second, requests} =
      with_requests(fn ->
        read_page.(limit: 4, after: List.last(first.results).__metadata__.keyset)
      end)

    assert Enum.map(second.results, & &1.name) == ["c6", "c5", "c4", "c3"]

    assert [%{request: :query, message: {:query, Counter, %{filter: filter, limit: 5}}}] =
             requests

    # the keyset's "after" condition on touched_at is part of the node's filter
    assert inspect(filter) =~ "touched_at"

    third = read_page.(limit: 4, after: List.last(second.results).__metadata__.keyset)
    assert Enum.map(third.results, & &1.name) == ["c2", "c1"]
    refute third.more?
  end

  test "times and naive datetimes filter, sort and page in the node" do
    # naive datetimes across a new year: term order would compare the day first
    for n <- 1..6 do
      Everything
      |> Ash.Changeset.for_create(
        :create,
        Map.merge(attrs(n), %{
          time: Time.add(~T[09:58:30], n * 20),
          naive: NaiveDateTime.add(~N[2024-12-31 23:59:00], n * 30)
        })
      )
      |> Ash.create!()
    end

    big = 123_456_789_012_345_678_901_234_567_890
    ns = fn query -> query |> Ash.read!() |> Enum.map(&(&1.integer - big)) end

    {results, requests} =
      with_requests(fn ->
        [
          ns.(Everything |> Ash.Query.filter(time > ^~T[09:59:40]) |> Ash.Query.sort(:time)),
          ns.(Everything |> Ash.Query.sort(time: :desc) |> Ash.Query.limit(2)),
          ns.(Everything |> Ash.Query.filter(time == ^~T[10:00:10])),
          ns.(
            Everything
            |> Ash.Query.filter(naive >= ^~N[2025-01-01 00:00:00])
            |> Ash.Query.sort(naive: :desc)
          ),
          ns.(Everything |> Ash.Query.sort(:naive) |> Ash.Query.offset(1) |> Ash.Query.limit(2)),
          ns.(Everything |> Ash.Query.filter(naive < ^~N[2025-01-01 00:00:00]))
        ]
      end)

    assert results == [[4, 5, 6], [6, 5], [5], [6, 5, 4, 3, 2], [2, 3], [1]]

    # each read is one query the node filters, sorts and pages
    assert Enum.map(requests, & &1.request) == List.duplicate(:query, 6)

    assert Enum.any?(requests, fn %{message: {:query, _, query}} ->
             query.sort == [naive: :asc_nils_last] and query.offset == 1 and query.limit == 2
           end)
  end
end
