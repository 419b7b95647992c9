defmodule AshApp.LateralJoinTest do
  @moduledoc """
  Relationships loaded with a page (`load: [posts: Ash.Query.page(...)]`): Ash runs them as a
  lateral join, so every parent gets its own page and count (keyset and offset), over a
  `has_many` and a `many_to_many` whose join records name their topics in another case. The
  node serves every parent's page from one partitioned `query` request; a relationship filter
  on the parent (`parent(score)`) is evaluated per parent by Ash.
  """
  use AshApp.Case, async: false

  # Author a has 5 posts, b 2, c none; likes are distinct so the sort has no ties.
  setup do
    [a, b, c] =
      for {name, score} <- [{"a", 30}, {"b", 15}, {"c", 0}] do
        Author |> Ash.Changeset.for_create(:create, %{name: name, score: score}) |> Ash.create!()
      end

    posts =
      for {author, likes} <- [{a, 10}, {a, 50}, {a, 30}, {a, 40}, {a, 20}, {b, 5}, {b, 15}] do
        Ash.create!(Post, %{title: "#{author.name}-#{likes}", likes: likes, author_id: author.id},
          action: :import
        )
      end

    %{a: a, b: b, c: c, posts: posts}
  end

  defp titles(page), do: Enum.map(page.results, & &1.title)

  # Post's `:keyset` action gives keyset pages, `:paged` offset pages.
  defp by_likes(action \\ :keyset),
    do: Post |> Ash.Query.for_read(action) |> Ash.Query.sort(likes: :desc)

  defp authors!(load), do: Author |> Ash.Query.sort(:name) |> Ash.Query.load(load) |> Ash.read!()

  # The node requests about `resource` among `requests`.
  defp about(requests, resource), do: Enum.filter(requests, &(&1.resource == resource))

  defp partitioned?(message), do: match?({:query, _, _, %{partition_by: _}}, message)

  test "a keyset page of each author's posts, with its count and the next page" do
    page = by_likes() |> Ash.Query.page(limit: 2, count: true)

    {[a, b, c], requests} = with_requests(fn -> authors!(posts: page) end)

    assert %Ash.Page.Keyset{count: 5, more?: true} = a.posts
    assert titles(a.posts) == ["a-50", "a-40"]
    assert %Ash.Page.Keyset{count: 2, more?: false} = b.posts
    assert titles(b.posts) == ["b-15", "b-5"]
    assert %Ash.Page.Keyset{count: 0, results: []} = c.posts

    # every author's page came from one partitioned query of the posts (the counts from one
    # grouped aggregate)
    assert [{:query, Post, _, %{partition_by: :author_id, partitions: [_, _, _]}}] =
             requests |> about(Post) |> Enum.map(& &1.message) |> Enum.filter(&partitioned?/1)

    assert [:aggregate, :query] = requests |> about(Post) |> Enum.map(& &1.request) |> Enum.sort()

    next = Ash.page!(a.posts, :next)
    assert %Ash.Page.Keyset{} = next
    assert titles(next) == ["a-30", "a-20"]
    assert titles(Ash.page!(next, :next)) == ["a-10"]
  end

  test "an offset page of each author's posts" do
    page = by_likes(:paged) |> Ash.Query.page(limit: 2, offset: 1, count: true)

    [a, b, c] = authors!(posts: page)

    assert %Ash.Page.Offset{offset: 1, count: 5, more?: true} = a.posts
    assert titles(a.posts) == ["a-40", "a-30"]
    assert %Ash.Page.Offset{count: 2, more?: false} = b.posts
    assert titles(b.posts) == ["b-5"]
    assert %Ash.Page.Offset{count: 0, results: []} = c.posts
    assert titles(Ash.page!(a.posts, :next)) == ["a-20", "a-10"]
  end

  test "a limited load without a page is per author too" do
    [a, b, c] = authors!(posts: by_likes() |> Ash.Query.limit(1))

    assert Enum.map(a.posts, & &1.title) == ["a-50"]
    assert Enum.map(b.posts, & &1.title) == ["b-15"]
    assert c.posts == []
  end

  test "the records a create returns load a page of their relationship", %{a: a} do
    post =
      Post
      |> Ash.Changeset.for_create(:import, %{title: "new", likes: 1, author_id: a.id})
      |> Ash.create!(load: [author: [posts: by_likes() |> Ash.Query.page(limit: 1, count: true)]])

    assert %Ash.Page.Keyset{count: 6} = post.author.posts
    assert titles(post.author.posts) == ["a-50"]
  end

  test "a page of each post's topics (many_to_many), joined case-insensitively",
       %{posts: posts} do
    for {name, rank} <- [{"Elixir", 1}, {"Rust", 2}, {"BEAM", 3}, {"Ash", 4}] do
      Ash.create!(Topic, %{name: name, rank: rank})
    end

    [p1, p2, p3 | _] = posts

    for {post, topic} <- [
          {p1, "elixir"},
          {p1, "RUST"},
          {p1, "beam"},
          {p1, "Ash"},
          {p2, "rust"},
          {p2, "Beam"}
        ] do
      Ash.create!(PostTopic, %{post_id: post.id, topic_name: topic})
    end

    topics = Topic |> Ash.Query.for_read(:keyset) |> Ash.Query.sort(rank: :desc)
    offset_topics = Topic |> Ash.Query.for_read(:paged) |> Ash.Query.sort(rank: :desc)

    {loaded, requests} =
      with_requests(fn ->
        Post
        |> Ash.Query.filter(id in ^[p1.id, p2.id, p3.id])
        |> Ash.Query.load(topics: Ash.Query.page(topics, limit: 3, count: true))
        |> Ash.read!()
      end)

    by_id = Map.new(loaded, &{&1.id, &1.topics})
    names = fn page -> Enum.map(page.results, &to_string(&1.name)) end

    assert %Ash.Page.Keyset{count: 4, more?: true} = by_id[p1.id]
    assert names.(by_id[p1.id]) == ["Ash", "BEAM", "Rust"]
    assert %Ash.Page.Keyset{count: 2, more?: false} = by_id[p2.id]
    assert names.(by_id[p2.id]) == ["BEAM", "Rust"]
    assert %Ash.Page.Keyset{count: 0, results: []} = by_id[p3.id]
    assert names.(Ash.page!(by_id[p1.id], :next)) == ["Elixir"]

    # the pages of every post from one partitioned query of the topics, after one read of the
    # join records (the counts, an aggregate Ash computes, read both once more)
    assert [{:query, Topic, _, %{partition_by: :name, partitions: [_, _, _]}}] =
             requests |> about(Topic) |> Enum.map(& &1.message) |> Enum.filter(&partitioned?/1)

    assert length(requests |> about(Topic) |> Enum.filter(&(&1.request == :query))) == 2
    assert length(requests |> about(PostTopic) |> Enum.filter(&(&1.request == :query))) == 2

    # and with offset pages
    [offset_page] =
      Post
      |> Ash.Query.filter(id == ^p1.id)
      |> Ash.Query.load(topics: Ash.Query.page(offset_topics, limit: 2, offset: 2, count: true))
      |> Ash.read!()
      |> Enum.map(& &1.topics)

    assert %Ash.Page.Offset{count: 4, more?: false} = offset_page
    assert names.(offset_page) == ["Rust", "Elixir"]
  end

  test "a relationship filtered on the parent gets each parent's own records" do
    [a, b, c] = authors!(posts_liked_enough: Ash.Query.sort(Post, likes: :asc))

    # a: likes >= 30; b: >= 15; c: >= 0 (no posts)
    assert Enum.map(a.posts_liked_enough, & &1.title) == ["a-30", "a-40", "a-50"]
    assert Enum.map(b.posts_liked_enough, & &1.title) == ["b-15"]
    assert c.posts_liked_enough == []

    [a, b, _c] =
      authors!(
        posts_liked_enough:
          Post
          |> Ash.Query.for_read(:paged)
          |> Ash.Query.sort(likes: :asc)
          |> Ash.Query.page(limit: 1, count: true)
      )

    # (Ash reads a relationship with a parent filter with its own read action: offset pages)
    assert %{count: 3} = a.posts_liked_enough
    assert titles(a.posts_liked_enough) == ["a-30"]
    assert titles(b.posts_liked_enough) == ["b-15"]
  end
end
