defmodule AshApp.CrudTest do
  @moduledoc "Create, get, filter, sort, offset/limit, update (primary key included), destroy, composite keys and the errors users see."
  use AshApp.Case, async: false

  defp author!(attrs) do
    Author |> Ash.Changeset.for_create(:create, attrs) |> Ash.create!()
  end

  defp names(records), do: Enum.map(records, & &1.name)

  setup do
    authors =
      for {name, score} <- [{"ann", 30}, {"bob", 10}, {"cid", 20}, {"dan", nil}, {"eve", 40}] do
        author!(%{name: name, score: score, email: "#{name}@example.com"})
      end

    %{authors: authors}
  end

  test "create returns the stored record and get reads it back", %{authors: [ann | _]} do
    assert %Author{name: "ann", score: 30, posts_written: 0, version: 0} = ann
    assert ann.__meta__.state == :loaded
    assert {:ok, fetched} = Ash.get(Author, ann.id)
    assert fetched.id == ann.id
    assert fetched.email == "ann@example.com"
  end

  test "filters on pushed-down types" do
    assert Author
           |> Ash.Query.filter(score > 15)
           |> Ash.Query.sort(:name)
           |> Ash.read!()
           |> names() ==
             ["ann", "cid", "eve"]

    # nil is not greater than anything (SQL-like, like Ash), and `!=` does not match nil either
    assert Author |> Ash.Query.filter(score != 10) |> Ash.read!() |> names() |> Enum.sort() ==
             ["ann", "cid", "eve"]

    assert Author |> Ash.Query.filter(is_nil(score)) |> Ash.read!() |> names() == ["dan"]

    assert Author
           |> Ash.Query.filter(name in ["bob", "eve", "zed"])
           |> Ash.read!()
           |> names()
           |> Enum.sort() ==
             ["bob", "eve"]

    assert Author
           |> Ash.Query.filter(score < 25 or name == "eve")
           |> Ash.read!()
           |> names()
           |> Enum.sort() == ["bob", "cid", "eve"]

    assert Author |> Ash.Query.filter(not (score < 25)) |> Ash.read!() |> names() |> Enum.sort() ==
             ["ann", "eve"]

    assert Author
           |> Ash.Query.filter(contains(name, "n"))
           |> Ash.read!()
           |> names()
           |> Enum.sort() ==
             ["ann", "dan"]
  end

  test "sort, offset and limit in every combination" do
    assert Author |> Ash.Query.sort(score: :asc) |> Ash.read!() |> names() ==
             ["bob", "cid", "ann", "eve", "dan"]

    assert Author |> Ash.Query.sort(score: :desc) |> Ash.read!() |> names() ==
             ["dan", "eve", "ann", "cid", "bob"]

    assert Author |> Ash.Query.sort(score: :asc_nils_first) |> Ash.read!() |> names() ==
             ["dan", "bob", "cid", "ann", "eve"]

    assert Author |> Ash.Query.sort(score: :desc_nils_last) |> Ash.read!() |> names() ==
             ["eve", "ann", "cid", "bob", "dan"]

    assert Author |> Ash.Query.sort(:name) |> Ash.Query.limit(2) |> Ash.read!() |> names() ==
             ["ann", "bob"]

    assert Author |> Ash.Query.sort(:name) |> Ash.Query.offset(3) |> Ash.read!() |> names() ==
             ["dan", "eve"]

    assert Author
           |> Ash.Query.filter(not is_nil(score))
           |> Ash.Query.sort(name: :desc)
           |> Ash.Query.offset(1)
           |> Ash.Query.limit(2)
           |> Ash.read!()
           |> names() == ["cid", "bob"]

    assert Author |> Ash.Query.sort(:name) |> Ash.Query.offset(10) |> Ash.read!() == []
    assert length(Author |> Ash.Query.limit(3) |> Ash.read!()) == 3
  end

  test "a primary-key read finds exactly one record", %{authors: [_, bob | _]} do
    assert [found] = Author |> Ash.Query.filter(id == ^bob.id) |> Ash.read!()
    assert found.name == "bob"
    assert [] = Author |> Ash.Query.filter(id == ^bob.id and name == "ann") |> Ash.read!()
    assert [] = Author |> Ash.Query.filter(id == ^bob.id) |> Ash.Query.offset(1) |> Ash.read!()
  end

  test "update changes the stored record", %{authors: [ann | _]} do
    assert {:ok, updated} =
             ann |> Ash.Changeset.for_update(:update, %{score: 99, name: "anna"}) |> Ash.update()

    assert %{score: 99, name: "anna", email: "ann@example.com"} = updated
    assert %{score: 99, name: "anna"} = Ash.get!(Author, ann.id)
  end

  test "update can change the primary key" do
    tag =
      Tag
      |> Ash.Changeset.for_create(:create, %{scope: "s", slot: 1, label: "x"})
      |> Ash.create!()

    assert {:ok, moved} = tag |> Ash.Changeset.for_update(:update, %{slot: 2}) |> Ash.update()
    assert %{scope: "s", slot: 2, label: "x"} = moved
    assert {:error, %Ash.Error.Invalid{}} = Ash.get(Tag, %{scope: "s", slot: 1})
    assert %{label: "x"} = Ash.get!(Tag, %{scope: "s", slot: 2})
  end

  test "re-keying onto an existing key is refused and changes nothing" do
    one = Tag |> Ash.Changeset.for_create(:create, %{scope: "s", slot: 1}) |> Ash.create!()
    Tag |> Ash.Changeset.for_create(:create, %{scope: "s", slot: 2}) |> Ash.create!()

    assert {:error, %Ash.Error.Invalid{errors: errors}} =
             one |> Ash.Changeset.for_update(:update, %{slot: 2}) |> Ash.update()

    # as ash_postgres reports a unique violation: one InvalidAttribute per field
    assert errors |> Enum.map(& &1.field) |> Enum.sort() == [:scope, :slot]
    assert Enum.all?(errors, &match?(%Ash.Error.Changes.InvalidAttribute{}, &1))
    assert Exception.message(hd(errors)) =~ "has already been taken"
    assert Ash.get!(Tag, %{scope: "s", slot: 1})
  end

  test "destroy removes the record", %{authors: [ann | _]} do
    assert :ok = Ash.destroy(ann)

    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Query.NotFound{}]}} =
             Ash.get(Author, ann.id)

    assert length(Ash.read!(Author)) == 4
  end

  test "composite primary keys" do
    for {scope, slot, label} <- [{"a", 1, "a1"}, {"a", 2, "a2"}, {"b", 1, "b1"}] do
      Tag
      |> Ash.Changeset.for_create(:create, %{scope: scope, slot: slot, label: label})
      |> Ash.create!()
    end

    assert %{label: "a2"} = Ash.get!(Tag, %{scope: "a", slot: 2})
    assert %{label: "b1"} = Ash.get!(Tag, scope: "b", slot: 1)

    assert Tag
           |> Ash.Query.filter(scope == "a")
           |> Ash.Query.sort(slot: :desc)
           |> Ash.read!()
           |> Enum.map(& &1.label) ==
             ["a2", "a1"]

    assert {:error,
            %Ash.Error.Invalid{
              errors: [
                %Ash.Error.Changes.InvalidAttribute{field: :scope},
                %Ash.Error.Changes.InvalidAttribute{field: :slot}
              ]
            }} = Tag |> Ash.Changeset.for_create(:create, %{scope: "a", slot: 1}) |> Ash.create()

    tag = Ash.get!(Tag, %{scope: "a", slot: 1})

    assert {:ok, %{label: "new"}} =
             tag |> Ash.Changeset.for_update(:update, %{label: "new"}) |> Ash.update()

    assert :ok = Ash.destroy(tag)
    assert Tag |> Ash.read!() |> length() == 2
  end

  describe "errors" do
    test "reading a missing record is NotFound" do
      assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Query.NotFound{}]}} =
               Ash.get(Author, Ash.UUID.generate())
    end

    test "updating or destroying a missing record is a stale-record error", %{authors: [ann | _]} do
      :ok = Ash.destroy(ann)

      assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.StaleRecord{}]}} =
               ann |> Ash.Changeset.for_update(:update, %{score: 1}) |> Ash.update()

      assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.StaleRecord{}]}} =
               Ash.destroy(ann)
    end

    test "a duplicate primary key names the field", %{authors: [ann | _]} do
      assert {:error, %Ash.Error.Invalid{errors: [error]}} =
               Author
               |> Ash.Changeset.for_create(:create, %{id: ann.id, name: "twin"})
               |> Ash.create()

      assert %Ash.Error.Changes.InvalidAttribute{field: :id, message: "has already been taken"} =
               error

      assert %{name: "ann"} = Ash.get!(Author, ann.id)
    end

    test "a duplicate identity names its field_names" do
      Seat
      |> Ash.Changeset.for_create(:create, %{row: "A", number: 1, code: "A1"})
      |> Ash.create!()

      assert {:error, %Ash.Error.Invalid{errors: [error]}} =
               Seat
               |> Ash.Changeset.for_create(:create, %{row: "B", number: 2, code: "A1"})
               |> Ash.create()

      assert %Ash.Error.Changes.InvalidAttribute{
               field: :ticket,
               message: "has already been taken"
             } = error
    end

    test "a duplicate identity names the field" do
      assert {:error, %Ash.Error.Invalid{errors: [error]}} =
               Author
               |> Ash.Changeset.for_create(:create, %{name: "x", email: "ann@example.com"})
               |> Ash.create()

      assert %Ash.Error.Changes.InvalidAttribute{field: :email, message: "has already been taken"} =
               error

      # an update that would duplicate it is refused too, and nils never conflict
      bob = Author |> Ash.Query.filter(name == "bob") |> Ash.read_one!()

      assert {:error,
              %Ash.Error.Invalid{errors: [%Ash.Error.Changes.InvalidAttribute{field: :email}]}} =
               bob
               |> Ash.Changeset.for_update(:update, %{email: "ann@example.com"})
               |> Ash.update()

      assert {:ok, _} = author!(%{name: "n1"}) |> then(&{:ok, &1})
      assert {:ok, _} = author!(%{name: "n2"}) |> then(&{:ok, &1})
    end

    test "invalid input never reaches the node" do
      assert {:error, %Ash.Error.Invalid{}} =
               Author |> Ash.Changeset.for_create(:create, %{score: "many"}) |> Ash.create()
    end
  end
end
