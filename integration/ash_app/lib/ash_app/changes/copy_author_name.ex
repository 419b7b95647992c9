defmodule AshApp.Changes.CopyAuthorName do
  @moduledoc "Before the action: reads the post's author and copies its name onto the post."
  use Ash.Resource.Change

  @impl true
  def change(changeset, _opts, _context) do
    Ash.Changeset.before_action(changeset, fn changeset ->
      case Ash.Changeset.get_attribute(changeset, :author_id) do
        nil ->
          changeset

        author_id ->
          case Ash.get(AshApp.Author, author_id, authorize?: false) do
            {:ok, author} ->
              Ash.Changeset.force_change_attribute(changeset, :author_name, author.name)

            {:error, error} ->
              Ash.Changeset.add_error(changeset, error)
          end
      end
    end)
  end
end
