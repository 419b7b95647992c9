defmodule AshApp.Changes.CountPostOnAuthor do
  @moduledoc "After the action: increments the author's `posts_written` (another record)."
  use Ash.Resource.Change

  @impl true
  def change(changeset, _opts, _context) do
    Ash.Changeset.after_action(changeset, fn _changeset, post ->
      if post.author_id do
        with {:ok, author} <- Ash.get(AshApp.Author, post.author_id, authorize?: false),
             {:ok, _author} <-
               author
               |> Ash.Changeset.for_update(:update, %{posts_written: author.posts_written + 1})
               |> Ash.update(authorize?: false) do
          {:ok, post}
        end
      else
        {:ok, post}
      end
    end)
  end
end
