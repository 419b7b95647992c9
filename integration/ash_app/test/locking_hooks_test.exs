defmodule AshApp.LockingHooksTest do
  @moduledoc "Optimistic locking and changeset filters, and action hooks that read and write other records."
  use AshApp.Case, async: false

  setup do
    author =
      Author
      |> Ash.Changeset.for_create(:create, %{name: "locked", score: 1, born_on: ~D[2000-01-01]})
      |> Ash.create!()

    %{author: author}
  end

  test "optimistic locking: an update from a stale copy is a StaleRecord error", %{author: author} do
    stale = author

    assert {:ok, %{version: 1, score: 2}} =
             author |> Ash.Changeset.for_update(:update_locked, %{score: 2}) |> Ash.update()

    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.StaleRecord{}]}} =
             stale |> Ash.Changeset.for_update(:update_locked, %{score: 3}) |> Ash.update()

    assert %{version: 1, score: 2} = Ash.get!(Author, author.id)

    fresh = Ash.get!(Author, author.id)

    assert {:ok, %{version: 2, score: 3}} =
             fresh |> Ash.Changeset.for_update(:update_locked, %{score: 3}) |> Ash.update()
  end

  test "a changeset filter the node cannot evaluate is checked by Ash first", %{author: author} do
    matching =
      author
      |> Ash.Changeset.for_update(:update, %{score: 5})
      |> Ash.Changeset.filter(Ash.Expr.expr(born_on == ^~D[2000-01-01] and score == 1))

    assert {:ok, %{score: 5}} = Ash.update(matching)

    not_matching =
      author
      |> Ash.Changeset.for_update(:update, %{score: 6})
      |> Ash.Changeset.filter(Ash.Expr.expr(born_on > ^~D[2000-01-01]))

    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.StaleRecord{}]}} =
             Ash.update(not_matching)

    assert %{score: 5} = Ash.get!(Author, author.id)
  end

  test "a destroy with a failing condition is stale and keeps the record", %{author: author} do
    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.StaleRecord{}]}} =
             author
             |> Ash.Changeset.for_destroy(:destroy)
             |> Ash.Changeset.filter(Ash.Expr.expr(score == 100))
             |> Ash.destroy()

    assert Ash.get!(Author, author.id)

    assert :ok =
             author
             |> Ash.Changeset.for_destroy(:destroy)
             |> Ash.Changeset.filter(Ash.Expr.expr(score == 1))
             |> Ash.destroy()
  end

  test "hooks read and write other records", %{author: author} do
    post =
      Post
      |> Ash.Changeset.for_create(:create, %{title: "hello", author_id: author.id})
      |> Ash.create!()

    # before_action read the author, after_action updated it
    assert post.author_name == "locked"
    assert %{posts_written: 1} = Ash.get!(Author, author.id)

    Post
    |> Ash.Changeset.for_create(:create, %{title: "again", author_id: author.id})
    |> Ash.create!()

    assert %{posts_written: 2} = Ash.get!(Author, author.id)
  end

  test "a failing hook returns its error", %{author: _author} do
    assert {:error, %Ash.Error.Invalid{}} =
             Post
             |> Ash.Changeset.for_create(:create, %{
               title: "orphan",
               author_id: Ash.UUID.generate()
             })
             |> Ash.create()
  end
end
