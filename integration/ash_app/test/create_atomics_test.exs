defmodule AshApp.CreateAtomicsTest do
  @moduledoc """
  Atomics on create (`atomic_set`, `can?(_, {:atomic, :create})`): each expression is evaluated
  against the record being created, its value cast to the attribute's type and stored with the
  record, in single creates, bulk creates and upserts (on the create branch only); an
  `allow_nil? false` attribute whose expression gives nil is a `Required` error and nothing is
  stored. Values set atomically on update are cast before they are stored too.
  """
  use AshApp.Case, async: false
  import Ash.Expr

  defp stored(id), do: Ash.get!(Counter, id)

  test "the data layer says it does atomics on create" do
    assert Ash.DataLayer.data_layer_can?(Counter, {:atomic, :create})
  end

  test "a create's atomic_set values are evaluated against the new record and stored" do
    before = DateTime.utc_now() |> DateTime.truncate(:second)

    counter =
      Counter
      |> Ash.Changeset.for_create(:create_stamped, %{name: "ann", count: 4})
      |> Ash.create!()

    assert %{label: "ann@created", version: 40, count: 4} = counter
    # now() has microseconds; the :utc_datetime attribute keeps whole seconds
    assert %DateTime{microsecond: {0, 0}} = counter.touched_at
    assert DateTime.compare(counter.touched_at, before) in [:gt, :eq]

    assert Map.take(stored(counter.id), [:label, :version, :count, :touched_at]) ==
             Map.take(counter, [:label, :version, :count, :touched_at])

    # atomic_ref of a field the create does not set reads its default
    no_count =
      Counter |> Ash.Changeset.for_create(:create_stamped, %{name: "bob"}) |> Ash.create!()

    assert %{version: 0, label: "bob@created"} = stored(no_count.id)
  end

  test "Ash.Changeset.atomic_set on a plain create" do
    counter =
      Counter
      |> Ash.Changeset.for_create(:create, %{name: "cy", count: 2})
      |> Ash.Changeset.atomic_set(:count, expr(^atomic_ref(:count) + 5))
      |> Ash.create!()

    assert counter.count == 7
    assert stored(counter.id).count == 7
  end

  test "an allow_nil? false attribute whose expression gives nil is Required, nothing stored" do
    assert {:error, %Ash.Error.Invalid{} = error} =
             Counter
             |> Ash.Changeset.for_create(:create_checked, %{name: "none", start: 1})
             |> Ash.create()

    assert Exception.message(error) =~ "required"
    assert Ash.read!(Counter) == []

    assert %{count: 3} =
             Counter
             |> Ash.Changeset.for_create(:create_checked, %{name: "some", start: 3})
             |> Ash.create!()
  end

  test "bulk creates apply each record's atomics and check allow_nil? per record" do
    result =
      Ash.bulk_create([%{name: "a", count: 1}, %{name: "b", count: 2}], Counter, :create_stamped,
        return_records?: true
      )

    assert result.status == :success

    assert result.records |> Enum.map(&{&1.name, &1.label, &1.version}) |> Enum.sort() ==
             [{"a", "a@created", 10}, {"b", "b@created", 20}]

    assert Counter |> Ash.read!() |> Enum.map(&{&1.name, &1.version}) |> Enum.sort() ==
             [{"a", 10}, {"b", 20}]

    failed =
      Ash.bulk_create([%{name: "none", start: 1}], Counter, :create_checked,
        return_errors?: true,
        return_records?: true
      )

    assert failed.status == :error
    assert [%Ash.Error.Changes.Required{field: :count}] = failed.errors
    refute Enum.any?(Ash.read!(Counter), &(&1.name == "none"))
  end

  test "an upsert's atomic_set applies to the record it creates, not to the one it updates" do
    created =
      Counter
      |> Ash.Changeset.for_create(:upsert_stamped, %{name: "dee", count: 1})
      |> Ash.create!()

    assert %{label: "dee@created", count: 1} = created

    Counter
    |> Ash.get!(created.id)
    |> Ash.Changeset.for_update(:update, %{label: "changed"})
    |> Ash.update!()

    updated =
      Counter
      |> Ash.Changeset.for_create(:upsert_stamped, %{name: "dee", count: 5})
      |> Ash.create!()

    assert %{id: id, label: "changed", count: 5} = updated
    assert id == created.id
  end

  test "a value set atomically on update is cast before it is stored" do
    counter = Counter |> Ash.Changeset.for_create(:create, %{name: "eve"}) |> Ash.create!()

    touched = counter |> Ash.Changeset.for_update(:touch) |> Ash.update!()
    assert %DateTime{microsecond: {0, 0}} = touched.touched_at
    assert stored(counter.id).touched_at == touched.touched_at

    # a soft destroy setting it the same way (Ash's own base_filter test does this)
    assert :ok = counter |> Ash.Changeset.for_destroy(:archive) |> Ash.destroy!()
    assert %DateTime{microsecond: {0, 0}} = stored(counter.id).touched_at
  end
end
