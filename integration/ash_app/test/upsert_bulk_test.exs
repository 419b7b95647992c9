defmodule AshApp.UpsertBulkTest do
  @moduledoc "Upserts by primary key and identity (with conditions) and bulk creates."
  use AshApp.Case, async: false

  describe "upserts" do
    test "by primary key: creates, then updates the same record" do
      id = Ash.UUID.generate()

      assert {:ok, created} =
               Author
               |> Ash.Changeset.for_create(:create, %{id: id, name: "first", score: 1})
               |> Ash.create(upsert?: true)

      assert created.id == id

      assert {:ok, updated} =
               Author
               |> Ash.Changeset.for_create(:create, %{id: id, name: "second", score: 2})
               |> Ash.create(upsert?: true)

      assert %{id: ^id, name: "second", score: 2} = updated
      assert [%{name: "second"}] = Ash.read!(Author)
    end

    test "by identity: keeps the existing primary key and sets only the upsert fields" do
      first =
        Author
        |> Ash.Changeset.for_create(:upsert_by_email, %{name: "a", email: "a@x.io", score: 1})
        |> Ash.create!()

      second =
        Author
        |> Ash.Changeset.for_create(:upsert_by_email, %{name: "b", email: "a@x.io", score: 2})
        |> Ash.create!()

      assert second.id == first.id
      assert %{name: "b", score: 2, email: "a@x.io"} = Ash.get!(Author, first.id)
      assert Ash.count!(Author) == 1

      third =
        Author
        |> Ash.Changeset.for_create(:upsert_by_email, %{name: "c", email: "c@x.io"})
        |> Ash.create!()

      assert third.id != first.id
      assert Ash.count!(Author) == 2
    end

    test "with a condition: a failing condition leaves the record alone" do
      id = Ash.UUID.generate()

      Author
      |> Ash.Changeset.for_create(:create, %{id: id, name: "keep", score: 10})
      |> Ash.create!()

      result =
        Author
        |> Ash.Changeset.for_create(:create, %{id: id, name: "replace", score: 1},
          upsert?: true,
          upsert_condition: Ash.Expr.expr(score < 5)
        )
        |> Ash.create()

      assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.StaleRecord{}]}} = result
      assert %{name: "keep", score: 10} = Ash.get!(Author, id)

      assert {:ok, %{name: "replace", score: 1}} =
               Author
               |> Ash.Changeset.for_create(:create, %{id: id, name: "replace", score: 1},
                 upsert?: true,
                 upsert_condition: Ash.Expr.expr(score > 5)
               )
               |> Ash.create()

      assert Ash.count!(Author) == 1
    end
  end

  test "upsert on an identity the node does not enforce (with a `where`) is emulated" do
    Tag
    |> Ash.Changeset.for_create(:create, %{scope: "other", slot: 1, label: "x"})
    |> Ash.create!()

    first =
      Tag
      |> Ash.Changeset.for_create(:pin, %{scope: "pinned", slot: 1, label: "x"})
      |> Ash.create!()

    assert %{scope: "pinned", slot: 1} = first

    # same pinned label: the pinned record is updated (its slot, part of its key, changes)
    second =
      Tag
      |> Ash.Changeset.for_create(:pin, %{scope: "pinned", slot: 2, label: "x"})
      |> Ash.create!()

    assert %{scope: "pinned", slot: 2, label: "x"} = second

    assert Tag |> Ash.Query.sort([:scope, :slot]) |> Ash.read!() |> Enum.map(&{&1.scope, &1.slot}) ==
             [{"other", 1}, {"pinned", 2}]
  end

  describe "bulk create" do
    test "creates every record and returns them" do
      inputs = for i <- 1..25, do: %{scope: "bulk", slot: i, label: "l#{i}"}

      result = Ash.bulk_create(inputs, Tag, :create, return_records?: true, return_errors?: true)

      assert %Ash.BulkResult{status: :success, records: records} = result
      assert length(records) == 25
      assert Tag |> Ash.Query.filter(scope == "bulk") |> Ash.count!() == 25
      assert %{label: "l7"} = Ash.get!(Tag, %{scope: "bulk", slot: 7})
    end

    test "a duplicate fails its whole batch: none of the batch is created" do
      Tag |> Ash.Changeset.for_create(:create, %{scope: "dup", slot: 2}) |> Ash.create!()
      inputs = for i <- 1..3, do: %{scope: "dup", slot: i, label: "new"}

      result =
        Ash.bulk_create(inputs, Tag, :create,
          return_records?: true,
          return_errors?: true,
          stop_on_error?: false
        )

      # as on Ets: the data layer's error is every record's of the batch
      assert %Ash.BulkResult{status: :error, records: [], error_count: 3, errors: errors} = result

      assert Enum.all?(errors, &(Exception.message(&1) =~ "has already been taken"))
      assert Tag |> Ash.Query.filter(scope == "dup") |> Ash.count!() == 1
      assert %{label: nil} = Ash.get!(Tag, %{scope: "dup", slot: 2})
    end

    test "a failing batch stops the bulk create with stop_on_error?; earlier batches stay" do
      Tag |> Ash.Changeset.for_create(:create, %{scope: "b1", slot: 3}) |> Ash.create!()
      Tag |> Ash.Changeset.for_create(:create, %{scope: "b2", slot: 3}) |> Ash.create!()
      slots = fn scope -> Tag |> Ash.Query.filter(scope == ^scope) |> Ash.read!() end
      sorted = fn records -> records |> Enum.map(& &1.slot) |> Enum.sort() end
      inputs = fn scope -> for i <- 1..5, do: %{scope: scope, slot: i, label: "new"} end

      # batches [1, 2], [3, 4], [5]: the second fails whole, at its record 3
      stopped =
        Ash.bulk_create(inputs.("b1"), Tag, :create,
          batch_size: 2,
          return_records?: true,
          return_errors?: true,
          stop_on_error?: true
        )

      assert %Ash.BulkResult{status: :partial_success, errors: [error]} = stopped
      assert Exception.message(error) =~ "has already been taken"
      # Ash's result after the stop carries the error, not the first batch's records (as on
      # Ets); the first batch is created, nothing of the second or the third
      assert stopped.records == []
      assert sorted.(slots.("b1")) == [1, 2, 3]

      went_on =
        Ash.bulk_create(inputs.("b2"), Tag, :create,
          batch_size: 2,
          return_records?: true,
          return_errors?: true,
          stop_on_error?: false
        )

      assert %Ash.BulkResult{status: :partial_success, error_count: 2} = went_on
      assert sorted.(went_on.records) == [1, 2, 5]
      assert sorted.(slots.("b2")) == [1, 2, 3, 5]
    end

    test "racing bulk creates sharing one key: one batch is created whole, the others not at all" do
      for round <- 1..5 do
        scope = "race#{round}"

        results =
          1..6
          |> Task.async_stream(
            fn t ->
              inputs = for i <- 1..10, do: %{scope: scope, slot: t * 100 + i, label: "t#{t}"}
              # the shared key in the middle of every batch
              inputs = List.insert_at(inputs, 5, %{scope: scope, slot: 0, label: "t#{t}"})
              {t, Ash.bulk_create(inputs, Tag, :create, return_errors?: true)}
            end,
            max_concurrency: 6,
            timeout: 60_000
          )
          |> Enum.map(fn {:ok, result} -> result end)

        assert [{winner, _}] = Enum.filter(results, fn {_, r} -> r.status == :success end)
        assert Enum.all?(results, fn {_, r} -> r.status in [:success, :error] end)

        stored = Tag |> Ash.Query.filter(scope == ^scope) |> Ash.read!()
        assert length(stored) == 11
        assert Enum.all?(stored, &(&1.label == "t#{winner}"))
      end
    end

    test "a bulk upsert is per record: a failing record leaves the others upserted" do
      Seat
      |> Ash.Changeset.for_create(:create, %{row: "A", number: 1, code: "x"})
      |> Ash.create!()

      inputs = [
        %{row: "B", number: 1, code: "y"},
        # its code is seat A1's
        %{row: "C", number: 1, code: "x"},
        %{row: "D", number: 1}
      ]

      result =
        Ash.bulk_create(inputs, Seat, :create,
          upsert?: true,
          upsert_identity: :unique_place,
          upsert_fields: [:holder],
          return_records?: true,
          return_errors?: true,
          stop_on_error?: false
        )

      assert %Ash.BulkResult{status: :partial_success, records: records, errors: [error]} = result

      assert records |> Enum.map(& &1.row) |> Enum.sort() == ["B", "D"]
      assert Exception.message(error) =~ "has already been taken"
      assert Seat |> Ash.read!() |> Enum.map(& &1.row) |> Enum.sort() == ["A", "B", "D"]

      # with stop_on_error?, Ash stops at the failing record and reports its error (not the
      # records); the others of the batch were upserted all the same: upserts are per record
      inputs = [%{row: "E", number: 1}, %{row: "F", number: 1, code: "x"}, %{row: "G", number: 1}]

      stopped =
        Ash.bulk_create(inputs, Seat, :create,
          upsert?: true,
          upsert_identity: :unique_place,
          upsert_fields: [:holder],
          return_records?: true,
          return_errors?: true,
          stop_on_error?: true
        )

      assert %Ash.BulkResult{status: :partial_success, records: [], errors: [error]} = stopped
      assert Exception.message(error) =~ "has already been taken"
      assert Seat |> Ash.read!() |> Enum.map(& &1.row) |> Enum.sort() == ["A", "B", "D", "E", "G"]
    end

    test "bulk upsert by identity" do
      Author
      |> Ash.Changeset.for_create(:create, %{name: "old", email: "u1@x.io", score: 1})
      |> Ash.create!()

      inputs = [
        %{name: "new1", email: "u1@x.io", score: 10},
        %{name: "new2", email: "u2@x.io", score: 20}
      ]

      assert %Ash.BulkResult{status: :success, records: records} =
               Ash.bulk_create(inputs, Author, :upsert_by_email,
                 return_records?: true,
                 return_errors?: true
               )

      assert length(records) == 2

      assert Author |> Ash.Query.sort(:email) |> Ash.read!() |> Enum.map(&{&1.email, &1.name}) ==
               [{"u1@x.io", "new1"}, {"u2@x.io", "new2"}]
    end

    test "bulk create of posts runs the hooks for each record" do
      author = Author |> Ash.Changeset.for_create(:create, %{name: "writer"}) |> Ash.create!()

      inputs = for i <- 1..3, do: %{title: "t#{i}", author_id: author.id}

      assert %Ash.BulkResult{status: :success} =
               Ash.bulk_create(inputs, Post, :create, return_errors?: true)

      assert %{posts_written: 3} = Ash.get!(Author, author.id)
      assert Post |> Ash.read!() |> Enum.map(& &1.author_name) == ["writer", "writer", "writer"]
    end
  end
end
