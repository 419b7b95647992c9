defmodule Demo.Book do
  @moduledoc """
  A book whose record lives as an actor on the Rust node. Untouched for three seconds, a book
  expires: the node asks this VM to run the primary destroy action, whose hook says so.
  """
  use Ash.Resource, domain: Demo.Library, data_layer: AshGenServer.DataLayer

  gen_server do
    inactivity_timeout :timer.seconds(3)
  end

  attributes do
    uuid_primary_key :id
    attribute :title, :string, allow_nil?: false, public?: true
    attribute :author, :string, public?: true
    attribute :year, :integer, public?: true
  end

  actions do
    defaults [:read, create: [:title, :author, :year], update: [:title, :author, :year]]

    destroy :destroy do
      primary? true
      # The hook runs Elixir code after the destroy, which cannot be done atomically.
      require_atomic? false

      change after_action(fn changeset, book, _context ->
               case changeset.context[:ash_gen_server][:expired] do
                 nil ->
                   :ok

                 reason ->
                   IO.puts("   expired (#{reason}): #{book.title}, via the destroy action")
               end

               {:ok, book}
             end)
    end
  end
end
