defmodule AshApp.LoadedAggregatesTest do
  @moduledoc """
  Relationship aggregates loaded on many records: Ash's values, and a number of node requests
  that does not grow with the number of records (one grouped `aggregate` request per aggregate
  filter and batch of parents; one read of the related records per aggregate Ash computes).
  """
  use AshApp.Case, async: false

  # Computed by the node (no filter, or a pushable one).
  @node_fields [
    :post_count,
    :total_likes,
    :avg_likes,
    :least_likes,
    :most_likes,
    :has_posts,
    :most_liked_title,
    :titles,
    :popular_post_count
  ]

  # Computed by Ash (a sort or a filter on a date).
  @runtime_fields [:latest_title, :recent_post_count]

  defp authors!(count) do
    inputs = for i <- 1..count, do: %{name: "author#{String.pad_leading("#{i}", 5, "0")}"}

    %Ash.BulkResult{status: :success, records: authors} =
      Ash.bulk_create(inputs, Author, :create, return_records?: true, return_errors?: true)

    Enum.sort_by(authors, & &1.name)
  end

  # Author i (from 1) gets rem(i, 4) posts. Likes are distinct (no ties to order), a few nil.
  defp posts!(authors) do
    inputs =
      for {author, i} <- Enum.with_index(authors, 1), j <- 1..rem(i, 4)//1 do
        %{
          author_id: author.id,
          title: "post-#{i}-#{j}",
          likes: if(rem(i + j, 5) == 0, do: nil, else: i * 3 + j),
          published_on: Date.add(~D[2023-12-30], rem(i, 7) - 2 * j)
        }
      end

    %Ash.BulkResult{status: :success} =
      Ash.bulk_create(inputs, Post, :import, return_errors?: true)

    Enum.group_by(inputs, & &1.author_id)
  end

  # What Ash gives each aggregate of AshApp.Author for these posts.
  defp expected(posts) do
    likes = posts |> Enum.map(& &1.likes) |> Enum.reject(&is_nil/1)
    # `sort likes: :desc` puts nils first, as Ash does
    by_likes = Enum.sort_by(posts, &{not is_nil(&1.likes), -(&1.likes || 0)})
    by_date = Enum.sort_by(posts, & &1.published_on, {:desc, Date})

    %{
      post_count: length(posts),
      total_likes: if(likes == [], do: nil, else: Enum.sum(likes)),
      avg_likes: if(likes == [], do: nil, else: Enum.sum(likes) / length(likes)),
      least_likes: Enum.min(likes, fn -> nil end),
      most_likes: Enum.max(likes, fn -> nil end),
      has_posts: posts != [],
      most_liked_title: Enum.at(Enum.map(by_likes, & &1.title), 0),
      titles: posts |> Enum.map(& &1.title) |> Enum.sort(),
      popular_post_count: Enum.count(likes, &(&1 >= 10)),
      latest_title: Enum.at(Enum.map(by_date, & &1.title), 0),
      recent_post_count:
        Enum.count(posts, &(Date.compare(&1.published_on, ~D[2024-01-01]) != :lt))
    }
  end

  defp assert_values(authors, posts, fields) do
    for author <- authors do
      expected = expected(Map.get(posts, author.id, []))

      for field <- fields do
        assert Map.fetch!(author, field) == Map.fetch!(expected, field),
               "#{author.name} #{field}: #{inspect(Map.fetch!(author, field))}, " <>
                 "expected #{inspect(Map.fetch!(expected, field))}"
      end
    end
  end

  defp about(requests, resource), do: Enum.filter(requests, &(&1.resource == resource))

  setup do
    authors = authors!(12)
    %{authors: authors, posts: posts!(authors)}
  end

  test "a read loading node aggregates makes one grouped request per aggregate filter",
       %{posts: posts} do
    {authors, requests} =
      with_requests(fn ->
        Author |> Ash.Query.sort(:name) |> Ash.Query.load(@node_fields) |> Ash.read!()
      end)

    assert length(authors) == 12
    assert_values(authors, posts, @node_fields)

    # one request per aggregate filter and sort, not one per author: the aggregates without a
    # filter share one (`most_liked_title` sets its sort; those that do not depend on the
    # order go with it), `titles` (sorted by title) another, `popular_post_count` (likes >= 10)
    # a third
    post_requests = about(requests, Post)
    assert length(post_requests) == 3, inspect(post_requests, pretty: true)
    assert Enum.all?(post_requests, &(&1.request == :aggregate))

    for %{request: :aggregate, message: message} <- post_requests do
      assert {:aggregate, Post, %{filter: filter}, _aggregates, %{group_by: :author_id}} = message

      assert {:in, :author_id, ids} = in_filter(filter)
      assert length(ids) == 12
    end
  end

  test "loading an aggregate on N records already read is one node request",
       %{authors: authors, posts: posts} do
    {loaded, requests} = with_requests(fn -> Ash.load!(authors, :post_count) end)

    assert_values(loaded, posts, [:post_count])
    assert [%{request: :aggregate}] = about(requests, Post)

    # the same for one record
    {[one], requests} = with_requests(fn -> Ash.load!(Enum.take(authors, 1), :post_count) end)
    assert_values([one], posts, [:post_count])
    assert [%{request: :aggregate}] = about(requests, Post)
  end

  test "aggregates Ash computes read the related records once per aggregate, not per record",
       %{authors: authors, posts: posts} do
    {loaded, requests} = with_requests(fn -> Ash.load!(authors, @runtime_fields) end)

    assert_values(loaded, posts, @runtime_fields)
    assert length(about(requests, Post)) <= length(@runtime_fields)
  end

  test "aggregates loaded on a few records at a time give the same values",
       %{authors: authors, posts: posts} do
    for chunk <- Enum.chunk_every(authors, 5) do
      chunk |> Ash.load!(@node_fields ++ @runtime_fields) |> assert_values(posts, @node_fields)
    end

    for author <- Enum.take(authors, 4) do
      [author]
      |> Ash.load!(@node_fields ++ @runtime_fields)
      |> assert_values(posts, @runtime_fields)
    end
  end

  test "filter and sort on a loaded aggregate, over many records",
       %{authors: authors, posts: posts} do
    {found, requests} =
      with_requests(fn ->
        Author
        |> Ash.Query.filter(post_count >= 2)
        |> Ash.Query.sort(post_count: :desc, name: :asc)
        |> Ash.read!()
      end)

    expected =
      authors
      |> Enum.map(&{length(Map.get(posts, &1.id, [])), &1.name})
      |> Enum.filter(fn {count, _name} -> count >= 2 end)
      |> Enum.sort_by(fn {count, name} -> {-count, name} end)
      |> Enum.map(&elem(&1, 1))

    assert Enum.map(found, & &1.name) == expected
    # Ash asks for `post_count` for the filter, for the sort and for the records it returns:
    # one grouped request each, however many authors there are
    post_requests = about(requests, Post)
    assert length(post_requests) <= 3
    assert Enum.all?(post_requests, &match?(%{message: {:aggregate, Post, _, _, _}}, &1))
  end

  test "more parents than one batch: one request per batch of 1,000" do
    clear!([Author, Post])
    authors = authors!(1_234)
    posts = posts!(authors)

    {loaded, requests} =
      with_requests(fn -> Author |> Ash.Query.load([:post_count, :titles]) |> Ash.read!() end)

    assert length(loaded) == 1_234
    assert_values(loaded, posts, [:post_count, :titles])
    post_requests = about(requests, Post)
    assert length(post_requests) == 2

    sizes =
      for %{message: {:aggregate, Post, %{filter: filter}, _, _}} <- post_requests do
        {:in, :author_id, ids} = in_filter(filter)
        length(ids)
      end

    assert Enum.sort(sizes) == [234, 1_000]
  end

  defp in_filter({:in, _, _} = filter), do: filter
  defp in_filter({:and, left, right}), do: in_filter(left) || in_filter(right)
  defp in_filter(_), do: nil

  test "an aggregate whose read_action has a modify_query is computed through that action",
       %{authors: authors} do
    # the :hidden action's hook reads no post; the node would count them all
    assert Ash.read!(Post, action: :hidden) == []

    loaded = Ash.load!(authors, [:post_count, :hidden_post_count])
    assert Enum.any?(loaded, &(&1.post_count > 0))
    assert Enum.all?(loaded, &(&1.hidden_post_count == 0))

    assert [%{hidden_post_count: 0}] =
             Author
             |> Ash.Query.filter(id == ^hd(authors).id)
             |> Ash.Query.load(:hidden_post_count)
             |> Ash.read!()
  end
end
