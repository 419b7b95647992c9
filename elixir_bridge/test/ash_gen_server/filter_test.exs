defmodule AshGenServer.FilterTest do
  use ExUnit.Case, async: true

  require Ash.Query
  alias AshGenServer.Filter
  alias AshGenServer.Test.{Pair, Thing}

  defp plan(query), do: Filter.translate(query.filter, query.resource)

  defp uuid_bytes(uuid) do
    {:ok, bytes} = Ecto.UUID.dump(uuid)
    bytes
  end

  test "no filter pushes nothing and is exact" do
    assert %{expr: true, exact?: true} = Filter.translate(nil, Thing)
  end

  test "equality needs no nil guard, ordering comparisons get one" do
    assert %{expr: {:eq, :name, "x"}, exact?: true} = plan(Ash.Query.filter(Thing, name == "x"))

    assert %{expr: {:and, {:not, {:is_nil, :count}}, {:gt, :count, 3}}, exact?: true} =
             plan(Ash.Query.filter(Thing, count > 3))
  end

  test "a literal on the left flips the operator" do
    assert %{expr: {:and, {:not, {:is_nil, :count}}, {:lt, :count, 3}}, exact?: true} =
             plan(Ash.Query.filter(Thing, 3 > count))
  end

  test "not equal excludes nils like Ash does" do
    assert %{expr: {:and, {:not, {:is_nil, :name}}, {:neq, :name, "x"}}, exact?: true} =
             plan(Ash.Query.filter(Thing, name != "x"))
  end

  test "not of a comparison is the comparison's false set (nils excluded)" do
    assert %{expr: {:and, {:not, {:is_nil, :count}}, {:not, {:gt, :count, 3}}}, exact?: true} =
             plan(Ash.Query.filter(Thing, not (count > 3)))
  end

  test "is_nil, in and contains on strings are pushed down" do
    assert %{expr: {:is_nil, :name}, exact?: true} = plan(Ash.Query.filter(Thing, is_nil(name)))

    assert %{expr: {:not, {:is_nil, :name}}, exact?: true} =
             plan(Ash.Query.filter(Thing, not is_nil(name)))

    assert %{expr: {:in, :count, values}, exact?: true} =
             plan(Ash.Query.filter(Thing, count in [1, 2]))

    assert Enum.sort(values) == [1, 2]

    assert %{expr: {:and, {:not, {:is_nil, :name}}, {:contains, :name, "ab"}}, exact?: true} =
             plan(Ash.Query.filter(Thing, contains(name, "ab")))
  end

  test "uuids and atoms are compared in their stored form" do
    id = Ash.UUID.generate()
    bytes = uuid_bytes(id)
    assert %{expr: {:eq, :id, ^bytes}, exact?: true} = plan(Ash.Query.filter(Thing, id == ^id))

    assert %{expr: {:eq, :kind, "big"}, exact?: true} =
             plan(Ash.Query.filter(Thing, kind == :big))
  end

  test "a bare boolean attribute is pushed down" do
    assert %{expr: {:eq, :active, true}, exact?: true} = plan(Ash.Query.filter(Thing, active))

    assert %{expr: {:eq, :active, false}, exact?: true} =
             plan(Ash.Query.filter(Thing, not active))
  end

  test "dates, decimals and ci_strings go to the node (typed fields); calculations are Ash's" do
    assert %{expr: {:and, {:not, {:is_nil, :born_on}}, {:gt, :born_on, ~D[2020-01-01]}}} =
             plan(Ash.Query.filter(Thing, born_on > ^~D[2020-01-01]))

    assert %{exact?: true, expr: {:and, _, {:gt, :price, %Decimal{}}}} =
             plan(Ash.Query.filter(Thing, price > ^Decimal.new("1.5")))

    assert %{exact?: true, expr: {:eq, :email, "A@B.C"}} =
             plan(Ash.Query.filter(Thing, email == "A@B.C"))

    assert %{expr: true, exact?: false} = plan(Ash.Query.filter(Thing, double > 4))
  end

  test "the pushable part of an `and` is still sent" do
    assert %{expr: {:eq, :name, "x"}, exact?: false} =
             plan(Ash.Query.filter(Thing, name == "x" and double > 4))
  end

  test "an `or` with a part the node cannot evaluate sends nothing" do
    assert %{expr: true, exact?: false} = plan(Ash.Query.filter(Thing, name == "x" or double > 4))
  end

  test "`or` and `not` follow Ash's three-valued logic" do
    # not (a or b): true where a is false/nil-free and b is false
    %{expr: expr, exact?: true} = plan(Ash.Query.filter(Thing, not (count > 3 or name == "x")))

    assert expr ==
             {:and, {:not, {:and, {:not, {:is_nil, :count}}, {:gt, :count, 3}}},
              {:and, {:not, {:is_nil, :name}}, {:not, {:eq, :name, "x"}}}}
  end

  test "comparing with nil is never true" do
    ref = %Ash.Query.Ref{
      attribute: Ash.Resource.Info.attribute(Thing, :name),
      relationship_path: [],
      resource: Thing
    }

    assert %{expr: false, exact?: true} =
             Filter.translate(%Ash.Query.Operator.Eq{left: ref, right: nil}, Thing)
  end

  test "primary key lookups are recognised" do
    id = Ash.UUID.generate()
    bytes = uuid_bytes(id)
    %{expr: expr} = plan(Ash.Query.filter(Thing, id == ^id))
    assert {:ok, %{id: ^bytes}} = Filter.primary_key_lookup(expr, [:id])

    %{expr: expr} = plan(Ash.Query.filter(Pair, left == "a" and right == 1))
    assert {:ok, %{left: "a", right: 1}} = Filter.primary_key_lookup(expr, [:left, :right])

    %{expr: expr} = plan(Ash.Query.filter(Pair, left == "a"))
    assert :error = Filter.primary_key_lookup(expr, [:left, :right])

    %{expr: expr} = plan(Ash.Query.filter(Thing, id == ^id and name == "x"))
    assert :error = Filter.primary_key_lookup(expr, [:id])
  end

  test "sorts on ordered types go to the node with explicit nil placement" do
    assert {:ok, [name: :asc_nils_last, count: :desc_nils_first]} =
             Filter.sort([name: :asc, count: :desc], Thing)

    assert {:ok, [name: :desc_nils_last]} = Filter.sort([name: :desc_nils_last], Thing)
    assert {:ok, [born_on: :asc_nils_last]} = Filter.sort([born_on: :asc], Thing)
    assert :error = Filter.sort([name: :asc, double: :desc], Thing)
  end
end
