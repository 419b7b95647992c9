defmodule AshApp.UnrelatedAggregatesTest do
  @moduledoc """
  Unrelated aggregates (`count :x, AshApp.Post do filter expr(... parent(name)) end`, no
  relationship): loaded, filtered and sorted on through Ash, and `exists(Resource, ...)` in a
  filter, each record getting the value for its own `parent(...)`.
  """
  use AshApp.Case, async: false

  @fields [:namesake_post_count, :namesake_likes, :has_namesake_post]

  defp author!(name),
    do: Author |> Ash.Changeset.for_create(:create, %{name: name}) |> Ash.create!()

  defp post!(title, likes, author \\ nil) do
    Post
    |> Ash.Changeset.for_create(:import, %{
      title: title,
      likes: likes,
      author_id: author && author.id
    })
    |> Ash.create!()
  end

  setup do
    ann = author!("ann")
    bob = author!("bob")
    author!("cy")

    # titled after an author, whoever wrote them (bob wrote one called "ann")
    post!("ann", 3, bob)
    post!("ann", 4)
    post!("bob", 10, ann)
    post!("zed", 99, ann)
    :ok
  end

  defp values(authors),
    do: Map.new(authors, fn a -> {a.name, Map.take(a, @fields)} end)

  test "loaded on many records: each gets the value for its own parent(name)" do
    authors = Author |> Ash.Query.load(@fields) |> Ash.read!()

    assert values(authors) == %{
             "ann" => %{namesake_post_count: 2, namesake_likes: 7, has_namesake_post: true},
             "bob" => %{namesake_post_count: 1, namesake_likes: 10, has_namesake_post: true},
             "cy" => %{namesake_post_count: 0, namesake_likes: nil, has_namesake_post: false}
           }
  end

  test "follows changes to the other resource" do
    [cy] = Author |> Ash.Query.filter(name == "cy") |> Ash.read!()
    assert %{namesake_post_count: 0} = Ash.load!(cy, :namesake_post_count)

    post!("cy", 1)
    assert %{namesake_post_count: 1, namesake_likes: 1} = Ash.load!(cy, @fields)
  end

  test "filtered and sorted on" do
    names =
      Author
      |> Ash.Query.filter(namesake_post_count >= 1)
      |> Ash.Query.sort(name: :asc)
      |> Ash.read!()
      |> Enum.map(& &1.name)

    assert names == ["ann", "bob"]

    names =
      Author
      |> Ash.Query.sort(namesake_post_count: :desc, name: :asc)
      |> Ash.read!()
      |> Enum.map(& &1.name)

    assert names == ["ann", "bob", "cy"]
  end

  test "exists(Resource, ...) in a filter, with parent()" do
    names =
      Author
      |> Ash.Query.filter(exists(AshApp.Post, title == parent(name) and likes > 5))
      |> Ash.read!()
      |> Enum.map(& &1.name)

    assert names == ["bob"]

    names =
      Author
      |> Ash.Query.filter(not exists(AshApp.Post, title == parent(name)))
      |> Ash.read!()
      |> Enum.map(& &1.name)

    assert names == ["cy"]
  end

  test "the aggregated resource's read policies apply for the actor (Secret, Vault)" do
    for {owner, topic} <- [{"ann", "x"}, {"bob", "x"}, {"bob", "x"}, {"ann", "y"}] do
      Secret
      |> Ash.Changeset.for_create(:create, %{owner: owner, topic: topic}, authorize?: false)
      |> Ash.create!(authorize?: false)
    end

    read = fn actor, load ->
      Secret
      |> Ash.Query.load(load)
      |> Ash.Query.sort(topic: :asc)
      |> Ash.read!(actor: actor)
      |> Enum.map(&{&1.owner, &1.topic, Map.get(&1, List.first(load))})
    end

    # ann sees her two secrets, and only her own "x" in the count of "x" (bob owns two more),
    # loaded directly or used by a calculation
    assert read.(%{name: "ann"}, [:same_topic_count]) == [{"ann", "x", 1}, {"ann", "y", 1}]
    assert read.(%{name: "ann"}, [:summary]) == [{"ann", "x", "seen 1"}, {"ann", "y", "seen 1"}]
    assert read.(%{name: "bob"}, [:summary]) == [{"bob", "x", "seen 2"}, {"bob", "x", "seen 2"}]

    # from another resource, through a calculation only (Ash adds no policy filter there)
    vault = Vault |> Ash.Changeset.for_create(:create, %{topic: "x"}) |> Ash.create!()

    for {actor, expected} <- [{%{name: "ann"}, "holds 1"}, {%{name: "bob"}, "holds 2"}] do
      assert [%{summary: ^expected}] =
               Vault
               |> Ash.Query.filter(id == ^vault.id)
               |> Ash.Query.load(:summary)
               |> Ash.read!(actor: actor)
    end

    # without authorization every secret counts
    assert Secret
           |> Ash.Query.filter(topic == "x")
           |> Ash.Query.load(:same_topic_count)
           |> Ash.read!(authorize?: false)
           |> Enum.map(& &1.same_topic_count) == [3, 3, 3]
  end

  test "a read authorized with :error fails on a record the actor may not read" do
    [ann_secret, bob_secret] =
      for owner <- ["ann", "bob"] do
        Secret
        |> Ash.Changeset.for_create(:create, %{owner: owner, topic: "k"}, authorize?: false)
        |> Ash.create!(authorize?: false)
      end

    # a filter policy with `authorize_with: :error` raises instead of leaving records out
    assert {:error, %Ash.Error.Forbidden{}} =
             Ash.read(Secret, actor: %{name: "ann"}, authorize_with: :error)

    assert {:ok, [%{owner: "ann"}]} =
             Secret
             |> Ash.Query.filter(owner == "ann")
             |> Ash.read(actor: %{name: "ann"}, authorize_with: :error)

    # a belongs_to with authorize_read_with :error and allow_forbidden_field?
    for secret <- [ann_secret, bob_secret] do
      Vault
      |> Ash.Changeset.for_create(:create, %{topic: secret.owner, key_secret_id: secret.id})
      |> Ash.create!()
    end

    load = fn query ->
      query
      |> Ash.Query.load(:key_secret)
      |> Ash.Query.sort(topic: :asc)
      |> Ash.read!(actor: %{name: "ann"})
      |> Enum.map(& &1.key_secret)
    end

    # one read of the related secrets for all vaults: one forbidden makes the field forbidden
    assert [%Ash.ForbiddenField{field: :key_secret}, %Ash.ForbiddenField{field: :key_secret}] =
             load.(Vault)

    assert [%Secret{owner: "ann"}] = load.(Ash.Query.filter(Vault, topic == "ann"))
  end
end
