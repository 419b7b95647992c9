defmodule AshApp.QueryTest do
  @moduledoc "Filters and sorts Ash evaluates at runtime, query aggregates, relationships and relationship aggregates."
  use AshApp.Case, async: false

  setup do
    authors =
      for {name, nick, born, rating, score} <- [
            {"ann", "AnnieB", ~D[1990-05-01], "4.50", 3},
            {"bob", "Bobby", ~D[1985-01-20], "3.10", 1},
            {"carla", "cArLa", ~D[2001-11-30], "10.00", 2},
            {"dan", nil, nil, nil, 4}
          ] do
        Author
        |> Ash.Changeset.for_create(:create, %{
          name: name,
          nickname: nick,
          born_on: born,
          rating: rating && Decimal.new(rating),
          score: score
        })
        |> Ash.create!()
      end

    %{authors: Map.new(authors, &{&1.name, &1})}
  end

  defp names(query), do: query |> Ash.read!() |> Enum.map(& &1.name) |> Enum.sort()

  describe "typed filters (dates, decimals, ci_strings: in the node) and filters Ash evaluates" do
    test "on a date" do
      assert names(Ash.Query.filter(Author, born_on > ^~D[1989-12-31])) == ["ann", "carla"]
      assert names(Ash.Query.filter(Author, born_on <= ^~D[1990-05-01])) == ["ann", "bob"]
    end

    test "on a decimal (term order would say 10.00 < 4.50)" do
      assert names(Ash.Query.filter(Author, rating > ^Decimal.new("4"))) == ["ann", "carla"]
    end

    test "on a ci_string, equality and contains ignore case" do
      assert names(Ash.Query.filter(Author, nickname == "CARLA")) == ["carla"]
      assert names(Ash.Query.filter(Author, contains(nickname, "BB"))) == ["bob"]
    end

    test "on a calculation" do
      assert names(Ash.Query.filter(Author, name_length > 3)) == ["carla"]
      assert names(Ash.Query.filter(Author, name_length == 3 and score > 1)) == ["ann", "dan"]
    end

    test "mixed with pushed-down parts, under or/not" do
      assert names(Ash.Query.filter(Author, score > 1 and born_on < ^~D[2000-01-01])) == ["ann"]

      assert names(Ash.Query.filter(Author, score == 1 or born_on > ^~D[2000-01-01])) ==
               ["bob", "carla"]

      # not (date > x): nil dates are neither
      assert names(Ash.Query.filter(Author, not (born_on > ^~D[1989-12-31]))) == ["bob"]
    end

    test "sort by a runtime type, with offset and limit applied after it" do
      sorted =
        Author
        |> Ash.Query.sort(rating: :desc_nils_last)
        |> Ash.read!()
        |> Enum.map(& &1.name)

      assert sorted == ["carla", "ann", "bob", "dan"]

      page =
        Author
        |> Ash.Query.filter(born_on > ^~D[1980-01-01])
        |> Ash.Query.sort(born_on: :asc)
        |> Ash.Query.offset(1)
        |> Ash.Query.limit(1)
        |> Ash.read!()

      assert Enum.map(page, & &1.name) == ["ann"]

      # a pushable sort with a runtime filter: the limit must follow the filter
      page =
        Author
        |> Ash.Query.filter(rating < ^Decimal.new("5"))
        |> Ash.Query.sort(score: :desc)
        |> Ash.Query.limit(1)
        |> Ash.read!()

      assert Enum.map(page, & &1.name) == ["ann"]
    end

    test "sort by a calculation" do
      assert Author
             |> Ash.Query.sort(name_length: :desc, name: :asc)
             |> Ash.read!()
             |> Enum.map(& &1.name) == ["carla", "ann", "bob", "dan"]
    end
  end

  describe "query aggregates" do
    test "in the node" do
      assert Ash.count!(Author) == 4
      assert Ash.count!(Ash.Query.filter(Author, score > 1)) == 3
      assert Ash.sum!(Author, :score) == 10
      assert Ash.avg!(Author, :score) == 2.5
      assert Ash.min!(Author, :score) == 1
      assert Ash.max!(Author, :name) == "dan"
      assert Ash.exists?(Ash.Query.filter(Author, score > 3))
      refute Ash.exists?(Ash.Query.filter(Author, score > 4))

      assert Ash.list!(Ash.Query.sort(Author, score: :asc), :name) == [
               "bob",
               "carla",
               "ann",
               "dan"
             ]

      assert Ash.first!(Ash.Query.sort(Author, score: :desc), :name) == "dan"
      assert Ash.count!(Author |> Ash.Query.sort(:name) |> Ash.Query.limit(2)) == 2
      assert Ash.sum!(Ash.Query.filter(Author, score > 100), :score) == nil
    end

    test "at runtime where the node cannot answer exactly" do
      assert Ash.count!(Ash.Query.filter(Author, born_on > ^~D[1989-12-31])) == 2
      assert Decimal.equal?(Ash.max!(Author, :rating), Decimal.new("10.00"))
      assert Decimal.equal?(Ash.sum!(Author, :rating), Decimal.new("17.60"))
      assert Ash.min!(Author, :born_on) == ~D[1985-01-20]

      assert Ash.list!(Ash.Query.sort(Author, born_on: :asc_nils_last), :name) ==
               ["bob", "ann", "carla", "dan"]
    end
  end

  describe "relationships" do
    setup %{authors: authors} do
      ann = authors["ann"]
      bob = authors["bob"]

      posts =
        for {author, title, likes, on} <- [
              {ann, "a-one", 5, ~D[2023-06-01]},
              {ann, "a-two", 12, ~D[2024-02-01]},
              {ann, "a-three", 30, ~D[2022-01-01]},
              {bob, "b-one", nil, nil},
              {bob, "b-two", 7, ~D[2020-01-01]}
            ] do
          Post
          |> Ash.Changeset.for_create(:create, %{
            title: title,
            likes: likes,
            published_on: on,
            author_id: author.id
          })
          |> Ash.create!()
        end

      %{posts: posts}
    end

    test "has_many and belongs_to load", %{authors: %{"ann" => ann, "bob" => bob}} do
      ann = Ash.load!(ann, posts: Ash.Query.sort(Post, :title))
      assert Enum.map(ann.posts, & &1.title) == ["a-one", "a-three", "a-two"]

      [post] = Post |> Ash.Query.filter(title == "b-one") |> Ash.read!() |> Ash.load!(:author)
      assert post.author.id == bob.id

      authors = Author |> Ash.Query.sort(:name) |> Ash.Query.load(:posts) |> Ash.read!()
      assert Enum.map(authors, &length(&1.posts)) == [3, 2, 0, 0]
    end

    test "relationship aggregates", %{authors: %{"ann" => ann, "bob" => bob, "dan" => dan}} do
      fields = [
        :post_count,
        :total_likes,
        :avg_likes,
        :least_likes,
        :most_likes,
        :has_posts,
        :most_liked_title,
        :latest_title,
        :titles,
        :popular_post_count,
        :recent_post_count
      ]

      ann = Ash.load!(ann, fields)
      assert ann.post_count == 3
      assert ann.total_likes == 47
      assert_in_delta ann.avg_likes, 47 / 3, 1.0e-9
      assert ann.least_likes == 5
      assert ann.most_likes == 30
      assert ann.has_posts
      assert ann.most_liked_title == "a-three"
      assert ann.latest_title == "a-two"
      assert ann.titles == ["a-one", "a-three", "a-two"]
      assert ann.popular_post_count == 2
      assert ann.recent_post_count == 1

      bob = Ash.load!(bob, fields)
      assert bob.post_count == 2
      assert bob.total_likes == 7
      assert bob.least_likes == 7
      assert bob.titles == ["b-one", "b-two"]

      dan = Ash.load!(dan, fields)
      assert dan.post_count == 0
      refute dan.has_posts
      assert dan.total_likes == nil
      assert dan.titles == []
    end

    test "filter and sort on an aggregate" do
      assert Author
             |> Ash.Query.filter(post_count > 0)
             |> Ash.Query.sort(post_count: :desc)
             |> Ash.read!()
             |> Enum.map(& &1.name) == ["ann", "bob"]
    end

    test "filter through a relationship" do
      assert Post
             |> Ash.Query.filter(author.name == "ann" and likes > 10)
             |> Ash.read!()
             |> Enum.map(& &1.title)
             |> Enum.sort() == ["a-three", "a-two"]

      assert names(Ash.Query.filter(Author, exists(posts, likes > 20))) == ["ann"]
    end
  end
end
