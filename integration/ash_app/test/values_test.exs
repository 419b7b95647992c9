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
end
