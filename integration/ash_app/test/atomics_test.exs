defmodule AshApp.AtomicsTest do
  @moduledoc """
  Atomic updates through Ash: `atomic_update` evaluated in the record's actor (`Counter`) or by
  the shim's compare-and-set loop (`CasCounter`), exact under concurrency either way; errors
  raised by expressions; upserts with atomics and conditions on incoming values; bulk updates
  and destroys by query with the `:atomic` strategy.
  """
  use AshApp.Case, async: false

  defp counter!(resource, attrs \\ %{}) do
    resource |> Ash.Changeset.for_create(:create, attrs) |> Ash.create!()
  end

  defp increments(resource, id, callers) do
    1..callers
    |> Task.async_stream(
      fn _ ->
        resource |> Ash.get!(id) |> Ash.Changeset.for_update(:increment) |> Ash.update!()
      end,
      max_concurrency: callers,
      timeout: 60_000
    )
    |> Enum.each(fn {:ok, _} -> :ok end)
  end

  test "the data layer says what Ash needs for atomics" do
    for resource <- [Counter, CasCounter],
        feature <- [{:atomic, :update}, {:atomic, :upsert}, :update_query, :destroy_query] do
      assert Ash.DataLayer.data_layer_can?(resource, feature)
    end

    assert Ash.DataLayer.data_layer_can?(Counter, :expr_error)
  end

  for resource <- [Counter, CasCounter] do
    @resource resource

    test "64 concurrent increments of one #{inspect(resource)} end at exactly 64 (3 runs)" do
      for _run <- 1..3 do
        counter = counter!(@resource)
        increments(@resource, counter.id, 64)
        assert Ash.get!(@resource, counter.id).count == 64
      end
    end

    test "#{inspect(resource)}: an increment returns the new value, with an argument too" do
      counter = counter!(@resource, %{count: 5})
      assert %{count: 6} = counter |> Ash.Changeset.for_update(:increment) |> Ash.update!()

      assert %{count: 16} =
               counter
               |> Ash.Changeset.for_update(:add, %{amount: 10})
               |> Ash.update!()

      assert Ash.get!(@resource, counter.id).count == 16
    end

    test "#{inspect(resource)}: string concatenation and functions the node lacks" do
      counter = counter!(@resource, %{name: "ann", label: "MiXeD"})
      assert %{label: "ann#x"} = counter |> Ash.Changeset.for_update(:relabel) |> Ash.update!()

      counter = counter!(@resource, %{name: "bob", label: "MiXeD"})

      assert %{label: "mixed"} =
               counter |> Ash.Changeset.for_update(:downcase_label) |> Ash.update!()
    end

    test "#{inspect(resource)}: error(...) in an atomic is the Ash error, nothing changes" do
      counter = counter!(@resource, %{count: 2})
      counter = counter |> Ash.Changeset.for_update(:bounded_increment) |> Ash.update!()
      assert counter.count == 3

      assert {:error, %Ash.Error.Invalid{errors: [error]}} =
               counter |> Ash.Changeset.for_update(:bounded_increment) |> Ash.update()

      assert %Ash.Error.Changes.InvalidAttribute{field: :count} = error
      assert Exception.message(error) =~ "is at its maximum"
      assert Ash.get!(@resource, counter.id).count == 3
    end

    test "#{inspect(resource)}: an atomic update of a destroyed record is stale" do
      counter = counter!(@resource)
      Ash.destroy!(counter)

      assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.StaleRecord{}]}} =
               counter |> Ash.Changeset.for_update(:increment) |> Ash.update()
    end

    test "#{inspect(resource)}: an action with require_atomic? false still runs" do
      counter = counter!(@resource)

      assert %{label: "touched"} =
               counter |> Ash.Changeset.for_update(:touch_label) |> Ash.update!()
    end

    test "#{inspect(resource)}: upserts with an atomic update on conflict count exactly" do
      1..32
      |> Task.async_stream(
        fn _ ->
          @resource
          |> Ash.Changeset.for_create(:hit, %{name: "page", count: 1})
          |> Ash.create!()
        end,
        max_concurrency: 32,
        timeout: 60_000
      )
      |> Enum.each(fn {:ok, _} -> :ok end)

      # the first one creates the record with count 1, the 31 others increment it
      assert [%{name: "page", count: 32}] = Ash.read!(@resource)
    end

    test "#{inspect(resource)}: 8 concurrent bulk upserts with an atomic update count exactly" do
      names = for i <- 1..5, do: "page#{i}"

      1..8
      |> Task.async_stream(
        fn _ ->
          result =
            names
            |> Enum.map(&%{name: &1, count: 1})
            |> Ash.bulk_create(@resource, :hit, return_errors?: true, return_records?: true)

          assert result.status == :success
          assert length(result.records) == 5
        end,
        max_concurrency: 8,
        timeout: 60_000
      )
      |> Enum.each(fn {:ok, _} -> :ok end)

      # each name: one upsert creates it with count 1, the 7 others increment it
      assert @resource |> Ash.read!() |> Enum.map(&{&1.name, &1.count}) |> Enum.sort() ==
               Enum.map(names, &{&1, 8})
    end

    test "#{inspect(resource)}: an upsert condition on the incoming values" do
      @resource
      |> Ash.Changeset.for_create(:newer, %{name: "doc", version: 2, label: "v2"})
      |> Ash.create!()

      older = Ash.Changeset.for_create(@resource, :newer, %{name: "doc", version: 1, label: "v1"})

      # skipped: Ash's StaleRecord, or the record as it is with return_skipped_upsert?
      assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.StaleRecord{}]}} =
               Ash.create(older)

      assert %{label: "v2", version: 2} = Ash.create!(older, return_skipped_upsert?: true)

      @resource
      |> Ash.Changeset.for_create(:newer, %{name: "doc", version: 3, label: "v3"})
      |> Ash.create!()

      assert [%{version: 3, label: "v3"}] = Ash.read!(@resource)
    end

    test "#{inspect(resource)}: bulk update by query with the atomic strategy" do
      for {name, count} <- [{"a", 1}, {"b", 5}, {"c", 10}, {"d", nil}] do
        counter!(@resource, %{name: name, count: count || 0, label: name})
      end

      result =
        @resource
        |> Ash.Query.filter(count >= 5)
        |> Ash.bulk_update!(:increment, %{},
          strategy: :atomic,
          return_records?: true,
          return_errors?: true
        )

      assert result.status == :success
      assert result.records |> Enum.map(& &1.count) |> Enum.sort() == [6, 11]

      assert @resource |> Ash.read!() |> Map.new(&{&1.name, &1.count}) ==
               %{"a" => 1, "b" => 6, "c" => 11, "d" => 0}

      # twice, concurrently: every matching record gets both increments
      1..2
      |> Task.async_stream(fn _ ->
        @resource
        |> Ash.Query.filter(count >= 5)
        |> Ash.bulk_update!(:add, %{amount: 100}, strategy: :atomic)
      end)
      |> Enum.each(fn {:ok, _} -> :ok end)

      assert @resource |> Ash.read!() |> Map.new(&{&1.name, &1.count}) ==
               %{"a" => 1, "b" => 206, "c" => 211, "d" => 0}
    end

    test "#{inspect(resource)}: bulk destroy by query with the atomic strategy" do
      for {name, count} <- [{"a", 1}, {"b", 5}, {"c", 10}] do
        counter!(@resource, %{name: name, count: count})
      end

      result =
        @resource
        |> Ash.Query.filter(count < 7)
        |> Ash.bulk_destroy!(:destroy, %{}, strategy: :atomic, return_records?: true)

      assert result.status == :success
      assert result.records |> Enum.map(& &1.name) |> Enum.sort() == ["a", "b"]
      assert [%{name: "c"}] = Ash.read!(@resource)
    end
  end

  test "update by query is one update_where when the node evaluates it all" do
    for count <- [1, 5, 10], do: counter!(Counter, %{count: count})

    {_, requests} =
      with_requests(fn ->
        Counter
        |> Ash.Query.filter(count > 2)
        |> Ash.bulk_update!(:increment, %{}, strategy: :atomic)
      end)

    assert [:update_where] == requests |> Enum.map(& &1.request) |> Enum.reject(&(&1 == :define))
    assert Counter |> Ash.read!() |> Enum.map(& &1.count) |> Enum.sort() == [1, 6, 11]

    {_, requests} =
      with_requests(fn ->
        Counter
        |> Ash.Query.filter(count > 2)
        |> Ash.bulk_destroy!(:destroy, %{}, strategy: :atomic)
      end)

    assert [:destroy_where] ==
             requests |> Enum.map(& &1.request) |> Enum.reject(&(&1 == :define))

    assert [%{count: 1}] = Ash.read!(Counter)
  end

  test "the increment runs in the actor: one request with atomics" do
    counter = counter!(Counter)

    {_, requests} =
      with_requests(fn ->
        counter |> Ash.Changeset.for_update(:increment) |> Ash.update!()
      end)

    # Ash runs an atomic update of one record as an update by primary key
    assert [%{request: :update_where, message: {:update_where, Counter, _query, opts}}] = requests

    assert [count: {:+, {:ref, :count}, {:value, 1}}] = opts.atomics
  end

  test "require_atomic? true refuses a change that cannot be atomic, as with ash_postgres" do
    counter = counter!(Counter, %{label: "before"})

    {result, requests} =
      with_requests(fn ->
        # :increment has require_atomic? true (Ash 3's default); a before_action hook cannot
        # run atomically (a change without an atomic form is refused when the resource
        # compiles, by Ash's own verifier)
        counter
        |> Ash.Changeset.for_update(:increment)
        |> Ash.Changeset.before_action(&Ash.Changeset.force_change_attribute(&1, :label, "x"))
        |> Ash.update()
      end)

    # Ash's own error, before anything reaches the data layer (ash_postgres gives the same)
    assert {:error, %Ash.Error.Framework{errors: [%Ash.Error.Framework.MustBeAtomic{} = error]}} =
             result

    assert Exception.message(error) =~ "must be performed atomically"
    assert Enum.reject(requests, &(&1.request in [:define, :get, :query])) == []
    assert %{label: "before"} = Ash.get!(Counter, counter.id)
  end

  test "a bulk upsert with atomics is one bulk_create carrying them" do
    Counter |> Ash.Changeset.for_create(:hit, %{name: "a", count: 1}) |> Ash.create!()

    {result, requests} =
      with_requests(fn ->
        Ash.bulk_create([%{name: "a", count: 1}, %{name: "b", count: 1}], Counter, :hit,
          return_errors?: true
        )
      end)

    assert result.status == :success

    assert [%{request: :bulk_create, message: {:bulk_create, Counter, [_, _], opts}}] =
             Enum.reject(requests, &(&1.request == :define))

    # count + 1 (with Ash's allow_nil? check around it)
    increment = {:+, {:ref, :count}, {:value, 1}}
    assert %{upsert: true, atomics: [count: {:if, {:is_nil, ^increment}, _, ^increment}]} = opts

    assert Counter |> Ash.read!() |> Enum.map(&{&1.name, &1.count}) |> Enum.sort() ==
             [{"a", 2}, {"b", 1}]
  end

  test "an upsert condition the node cannot evaluate never overwrites a concurrent change" do
    # 5 rounds of 24 racing upserts, each with a longer label; the condition keeps only longer
    # ones, so the longest must win whatever the interleaving
    for round <- 1..5 do
      name = "race#{round}"

      1..24
      |> Enum.shuffle()
      |> Task.async_stream(
        fn length ->
          Counter
          |> Ash.Changeset.for_create(:longer, %{name: name, label: String.duplicate("x", length)})
          |> Ash.create(return_skipped_upsert?: true)
        end,
        max_concurrency: 24,
        timeout: 60_000
      )
      |> Enum.each(fn {:ok, result} -> assert {:ok, %Counter{}} = result end)

      assert [%{label: label}] = Counter |> Ash.Query.filter(name == ^name) |> Ash.read!()
      assert String.length(label) == 24
    end

    # the condition is still checked: a shorter label is skipped
    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.StaleRecord{}]}} =
             Counter
             |> Ash.Changeset.for_create(:longer, %{name: "race1", label: "short"})
             |> Ash.create()
  end

  test "an upsert condition on incoming values is checked by the node, in one request" do
    Counter
    |> Ash.Changeset.for_create(:newer, %{name: "doc", version: 2, label: "v2"})
    |> Ash.create!()

    {_, requests} =
      with_requests(fn ->
        Counter
        |> Ash.Changeset.for_create(:newer, %{name: "doc", version: 5, label: "v5"})
        |> Ash.create!()
      end)

    assert [%{request: :upsert, message: {:upsert, Counter, _record, opts}}] = requests
    assert {:expr, {:lt, {:ref, :version}, {:incoming, :version}}} = opts.condition
    assert [%{label: "v5"}] = Ash.read!(Counter)
  end
end
