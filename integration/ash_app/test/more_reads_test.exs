defmodule AshApp.MoreReadsTest do
  @moduledoc "Distinct, streams, bulk updates/destroys by query, and which requests reads make."
  use AshApp.Case, async: false

  setup do
    for {name, score} <- [{"a", 1}, {"b", 1}, {"c", 2}, {"d", 3}, {"e", 3}, {"f", nil}] do
      Author |> Ash.Changeset.for_create(:create, %{name: name, score: score}) |> Ash.create!()
    end

    :ok
  end

  test "distinct keeps the first record of each value in sort order" do
    assert Author
           |> Ash.Query.distinct(:score)
           |> Ash.Query.sort(name: :desc)
           |> Ash.read!()
           |> Enum.map(& &1.name)
           |> Enum.sort() == ["b", "c", "e", "f"]
  end

  test "a stream reads every record in pages" do
    assert Author |> Ash.stream!(batch_size: 2) |> Enum.map(& &1.name) |> Enum.sort() ==
             ["a", "b", "c", "d", "e", "f"]
  end

  test "bulk update and bulk destroy by query (stream strategy)" do
    assert %Ash.BulkResult{status: :success} =
             Author
             |> Ash.Query.filter(score == 3)
             |> Ash.bulk_update(:update, %{score: 30}, strategy: :stream, return_errors?: true)

    assert Author |> Ash.Query.filter(score == 30) |> Ash.count!() == 2

    assert %Ash.BulkResult{status: :success} =
             Author
             |> Ash.Query.filter(score < 3)
             |> Ash.bulk_destroy(:destroy, %{}, strategy: :stream, return_errors?: true)

    assert Author |> Ash.read!() |> Enum.map(& &1.name) |> Enum.sort() == ["d", "e", "f"]
  end

  test "the plan: a primary-key read is a get, pushable queries page in the node" do
    [a] = Author |> Ash.Query.filter(name == "a") |> Ash.read!()

    query = fn ash_query ->
      {:ok, query} = Ash.Query.data_layer_query(ash_query)
      AshGenServer.Query.plan(query)
    end

    assert %{request: {:get, _}, runtime_filter?: false} =
             query.(Ash.Query.filter(Author, id == ^a.id))

    assert %{
             request: {:query, %{limit: 2, offset: 1, sort: [name: :asc_nils_last]}},
             runtime_filter?: false,
             runtime_sort?: false,
             runtime_page?: false
           } =
             query.(
               Author
               |> Ash.Query.filter(score > 1)
               |> Ash.Query.sort(:name)
               |> Ash.Query.offset(1)
               |> Ash.Query.limit(2)
             )

    assert %{
             request: {:query, %{limit: nil, offset: 0}},
             runtime_filter?: true,
             runtime_page?: true
           } =
             query.(
               Author
               |> Ash.Query.filter(score > 1 and name_length > 2)
               |> Ash.Query.limit(2)
             )
  end
end
