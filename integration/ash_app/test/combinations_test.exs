defmodule AshApp.CombinationsTest do
  @moduledoc """
  Combination queries (`Ash.Query.combination_of/2`): each combination runs on the node with its
  own filter, sort, offset, limit and calculations; the records are combined with SQL's
  semantics (`union` and `intersect`/`except` drop duplicates, `union_all` keeps them) and the
  outer query (filter, sort, distinct, offset, limit, calculations, aggregates) applies to the
  result.
  """
  use AshApp.Case, async: false

  import Ash.Expr
  alias Ash.Query.Combination

  setup do
    for {name, score} <- [{"ann", 3}, {"bob", 1}, {"carla", 2}, {"dan", 4}, {"eve", 5}] do
      Author |> Ash.Changeset.for_create(:create, %{name: name, score: score}) |> Ash.create!()
    end

    :ok
  end

  defp names(records), do: Enum.map(records, & &1.name)

  test "union_all keeps each combination's own sort and limit, and duplicates" do
    records =
      Author
      |> Ash.Query.combination_of([
        Combination.base(sort: [score: :desc], limit: 2),
        Combination.union_all(sort: [score: :asc], limit: 2),
        Combination.union_all(filter: expr(name == "eve"))
      ])
      |> Ash.read!()

    assert names(records) == ["eve", "dan", "bob", "carla", "eve"]
  end

  test "union drops the duplicates, the outer filter, sort, offset and limit apply to the result" do
    query =
      Author
      |> Ash.Query.combination_of([
        Combination.base(filter: expr(score <= 3)),
        Combination.union(filter: expr(score >= 2))
      ])

    assert query |> Ash.Query.sort(name: :asc) |> Ash.read!() |> names() ==
             ["ann", "bob", "carla", "dan", "eve"]

    assert query
           |> Ash.Query.filter(name != "carla")
           |> Ash.Query.sort(score: :desc)
           |> Ash.Query.offset(1)
           |> Ash.Query.limit(2)
           |> Ash.read!()
           |> names() == ["dan", "ann"]
  end

  test "intersect and except" do
    both =
      Author
      |> Ash.Query.combination_of([
        Combination.base(filter: expr(score >= 2)),
        Combination.intersect(filter: expr(score <= 4)),
        Combination.except(filter: expr(name == "dan"))
      ])
      |> Ash.Query.sort(name: :asc)
      |> Ash.read!()

    assert names(both) == ["ann", "carla"]

    none =
      Author
      |> Ash.Query.combination_of([
        Combination.base(filter: expr(score >= 4)),
        Combination.intersect(filter: expr(score < 2))
      ])
      |> Ash.read!()

    assert none == []
  end

  test "combination calculations: read, sorted, filtered and distinct on by the outer query" do
    records =
      Author
      |> Ash.Query.combination_of([
        Combination.base(
          filter: expr(score >= 3),
          calculations: %{group: calc(1, type: :integer), tag: calc(name <> "!", type: :string)}
        ),
        Combination.union_all(
          filter: expr(score < 3),
          calculations: %{group: calc(2, type: :integer), tag: calc("low", type: :string)}
        )
      ])
      |> Ash.Query.calculate(:group, :integer, expr(^combinations(:group)))
      |> Ash.Query.calculate(:tag, :string, expr(^combinations(:tag)))
      |> Ash.Query.sort([{calc(^combinations(:group)), :desc}, {:name, :asc}])
      |> Ash.read!()

    assert Enum.map(records, &{&1.name, &1.calculations.group, &1.calculations.tag}) == [
             {"bob", 2, "low"},
             {"carla", 2, "low"},
             {"ann", 1, "ann!"},
             {"dan", 1, "dan!"},
             {"eve", 1, "eve!"}
           ]

    one_per_group =
      Author
      |> Ash.Query.combination_of([
        Combination.base(
          filter: expr(score >= 3),
          calculations: %{group: calc(1, type: :integer)}
        ),
        Combination.union_all(
          filter: expr(score < 3),
          calculations: %{group: calc(2, type: :integer)}
        )
      ])
      |> Ash.Query.filter(^combinations(:group) == 1 or name == "bob")
      |> Ash.Query.distinct_sort(score: :desc)
      |> Ash.Query.distinct([{calc(^combinations(:group)), :asc}])
      |> Ash.read!()

    assert one_per_group |> names() |> Enum.sort() == ["bob", "eve"]
  end

  test "a combination calculation named like an attribute replaces its value" do
    records =
      Author
      |> Ash.Query.combination_of([
        Combination.base(
          filter: expr(name == "ann"),
          calculations: %{name: calc("Ms " <> name, type: :string)}
        ),
        Combination.union_all(
          filter: expr(name == "bob"),
          calculations: %{name: calc("Mr " <> name, type: :string)}
        )
      ])
      |> Ash.Query.sort(score: :asc)
      |> Ash.read!()

    assert names(records) == ["Mr bob", "Ms ann"]
  end

  test "aggregates load on the combined records" do
    ann = Ash.read_one!(Ash.Query.filter(Author, name == "ann"))

    for title <- ["a", "b"],
        do:
          Post
          |> Ash.Changeset.for_create(:create, %{title: title, author_id: ann.id})
          |> Ash.create!()

    records =
      Author
      |> Ash.Query.combination_of([
        Combination.base(filter: expr(name == "ann")),
        Combination.union_all(filter: expr(name == "ann")),
        Combination.union_all(filter: expr(name == "bob"))
      ])
      |> Ash.Query.load(:post_count)
      |> Ash.read!()

    assert Enum.map(records, &{&1.name, &1.post_count}) == [{"ann", 2}, {"ann", 2}, {"bob", 0}]
  end

  test "a :context tenant's combination reads that tenant's records only" do
    for {tenant, tag} <- [{"t1", "x"}, {"t1", "y"}, {"t2", "x"}] do
      Memo |> Ash.Changeset.for_create(:create, %{tag: tag}, tenant: tenant) |> Ash.create!()
    end

    records =
      Memo
      |> Ash.Query.combination_of([
        Combination.base(filter: expr(tag == "x")),
        Combination.union(filter: expr(tag in ["x", "y"]))
      ])
      |> Ash.Query.set_tenant("t1")
      |> Ash.Query.sort(tag: :asc)
      |> Ash.read!()

    assert Enum.map(records, & &1.tag) == ["x", "y"]
  end
end
