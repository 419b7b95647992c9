defmodule AshApp.IdentitiesTest do
  @moduledoc """
  Identities the node enforces beyond plain equality: `nils_distinct?: false` (`Seat`), where
  a nil key value counts like any other, against the default, where records with a nil key
  value never conflict.
  """
  use AshApp.Case, async: false

  defp seat(attrs), do: Seat |> Ash.Changeset.for_create(:create, attrs) |> Ash.create()

  defp taken?({:error, %Ash.Error.Invalid{errors: errors}}),
    do: Enum.any?(errors, &(Exception.message(&1) =~ "has already been taken"))

  defp taken?(_), do: false

  test "nils_distinct?: false: a nil key value is taken once" do
    assert {:ok, _} = seat(%{row: "A", number: nil})
    assert taken?(seat(%{row: "A", number: nil}))

    # the other fields of the key still tell records apart
    assert {:ok, _} = seat(%{row: "B", number: nil})
    assert {:ok, _} = seat(%{row: "A", number: 1})
    assert taken?(seat(%{row: "A", number: 1}))

    # all nil is one value too
    assert {:ok, _} = seat(%{row: nil, number: nil})
    assert taken?(seat(%{row: nil, number: nil}))

    assert Ash.count!(Seat) == 4
  end

  test "nils distinct (the default): any number of records without a value" do
    assert {:ok, _} = seat(%{row: "A", number: 1, code: nil})
    assert {:ok, _} = seat(%{row: "A", number: 2, code: nil})
    assert {:ok, _} = seat(%{row: "A", number: 3, code: "x"})
    assert taken?(seat(%{row: "A", number: 4, code: "x"}))
  end

  test "nils_distinct?: false: an update into a taken nil key fails and changes nothing" do
    {:ok, _} = seat(%{row: "A", number: nil, holder: "first"})
    {:ok, other} = seat(%{row: "A", number: 1, holder: "second"})

    assert taken?(other |> Ash.Changeset.for_update(:update, %{number: nil}) |> Ash.update())
    assert %{number: 1} = Ash.get!(Seat, other.id)
  end

  test "nils_distinct?: false: an upsert on the identity finds the record with the nil value" do
    claim = fn holder ->
      Seat
      |> Ash.Changeset.for_create(:claim, %{row: "A", number: nil, holder: holder})
      |> Ash.create!()
    end

    first = claim.("ann")
    second = claim.("bob")

    assert second.id == first.id
    assert [%{holder: "bob", number: nil}] = Ash.read!(Seat)
  end
end
