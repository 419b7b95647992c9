defmodule AshGenServer.ValuesTest do
  use ExUnit.Case, async: true

  alias AshGenServer.Values
  alias AshGenServer.Test.Thing

  test "every attribute round-trips through its stored form" do
    record =
      struct(Thing,
        id: Ash.UUID.generate(),
        name: "name",
        count: 12_345_678_901_234_567_890,
        ratio: 1.5,
        active: false,
        kind: :big,
        born_on: ~D[1999-12-31],
        at: ~U[2024-01-02 03:04:05.123456Z],
        price: Decimal.new("12.50"),
        email: Ash.CiString.new("Some@Example.com"),
        tags: ["a", "b"],
        meta: %{"a" => 1}
      )

    assert {:ok, stored} = Values.dump_record(Thing, record)
    assert byte_size(stored.id) == 16
    assert stored.kind == "big"
    assert stored.email == "Some@Example.com"

    # what the node sends back is the same term, after a trip through the external format
    stored = stored |> :erlang.term_to_binary() |> :erlang.binary_to_term()
    assert {:ok, cast} = Values.cast_record(Thing, stored)

    for field <- [:id, :name, :count, :ratio, :active, :kind, :born_on, :at, :tags, :meta] do
      assert Map.get(cast, field) == Map.get(record, field), "#{field} did not round-trip"
    end

    assert Decimal.equal?(cast.price, record.price)
    assert Ash.CiString.value(cast.email) == "Some@Example.com"
    assert cast.__meta__.state == :loaded
  end

  test "nil and absent fields cast to nil" do
    id = Ash.UUID.generate()
    {:ok, stored} = Values.dump_record(Thing, struct(Thing, id: id))
    assert stored.name == nil
    assert {:ok, %{id: ^id, name: nil}} = Values.cast_record(Thing, Map.delete(stored, :name))
  end

  test "primary keys are dumped" do
    id = Ash.UUID.generate()
    {:ok, bytes} = Ecto.UUID.dump(id)
    assert {:ok, %{id: ^bytes}} = Values.primary_key(Thing, %{id: id})
  end

  test "the layout of a resource is persisted when it compiles" do
    layout = Spark.Dsl.Extension.get_persisted(Thing, :ash_gen_server_layout)
    assert %AshGenServer.DataLayer.Layout{node: :"nowhere@127.0.0.1", call_timeout: 500} = layout
    assert layout == AshGenServer.DataLayer.Layout.build(Thing)
    assert layout.attribute_names == Enum.map(Ash.Resource.Info.attributes(Thing), & &1.name)
    assert [{:id, nil, %{name: :id}}] = layout.primary_key

    kinds = Map.new(layout.attributes, fn {name, kind, _} -> {name, kind} end)
    assert %{name: :string, count: :integer, ratio: :float, active: :boolean} = kinds
    assert %{id: nil, kind: nil, price: nil, email: nil, tags: nil} = kinds

    assert [{:left, :string, _}, {:right, :integer, _}] =
             AshGenServer.DataLayer.Layout.get(AshGenServer.Test.Pair).primary_key
  end

  test "values of a plain type but of another shape still go through Ash" do
    id = Ash.UUID.generate()
    {:ok, bytes} = Ecto.UUID.dump(id)

    # Ash.Type.Integer parses a stored string, Ash.Type.Float widens a stored integer
    assert {:ok, %{count: 7, ratio: 2.0}} =
             Values.cast_record(Thing, %{id: bytes, count: "7", ratio: 2})

    assert {:error, %Ash.Error.Invalid.InvalidStoredData{field: :active}} =
             Values.cast_record(Thing, %{id: bytes, active: 0})

    assert {:error, %Ash.Error.Changes.InvalidAttribute{field: :ratio}} =
             Values.dump_changes(Thing, %{ratio: 2})

    assert {:error, %Ash.Error.Changes.InvalidAttribute{field: :count}} =
             Values.dump_record(Thing, struct(Thing, id: id, count: "x"))
  end

  test "types whose stored order is Ash's, or that the node is told how to compare, are pushed down" do
    assert Values.pushdown(Ash.Type.Integer) == :order
    assert Values.pushdown(Ash.Type.String) == :order
    assert Values.pushdown(Ash.Type.UUID) == :order
    assert Values.pushdown(Ash.Type.Date) == :order
    assert Values.node_type(Ash.Type.Decimal) == :decimal
    assert Values.node_type(Ash.Type.CiString) == :ci_string
    assert Values.node_type(Ash.Type.UtcDatetimeUsec) == :datetime
    assert Values.pushdown(Ash.Type.Map) == :none
    assert Values.pushdown(Ash.Type.Term) == :none
  end

  test "stored uuid bytes order like their text" do
    uuids = for _ <- 1..200, do: Ash.UUID.generate()
    by_text = Enum.sort(uuids)

    by_bytes =
      uuids
      |> Enum.map(&elem(Ecto.UUID.dump(&1), 1))
      |> Enum.sort()
      |> Enum.map(&elem(Ecto.UUID.load(&1), 1))

    assert by_text == by_bytes
  end
end
