defmodule AshApp.Post do
  @moduledoc """
  A post, belonging to an author. Its create action has hooks that read and write the author
  (another record of the same data layer): before the action it copies the author's name, after
  it it bumps the author's `posts_written`. It is filed under topics (`many_to_many`), and its
  `:paged` (offset, by default) and `:keyset` read actions paginate, for loading a page of each
  author's posts.
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    uuid_primary_key :id
    attribute :title, :string, allow_nil?: false, public?: true
    attribute :likes, :integer, default: 0, public?: true
    attribute :published_on, :date, public?: true
    attribute :author_name, :string, public?: true
  end

  relationships do
    belongs_to :author, AshApp.Author, public?: true, attribute_writable?: true

    many_to_many :topics, AshApp.Topic do
      through AshApp.PostTopic
      source_attribute_on_join_resource :post_id
      destination_attribute_on_join_resource :topic_name
      destination_attribute :name
      public? true
    end
  end

  actions do
    defaults [:read, :destroy]

    create :create do
      primary? true
      accept [:title, :likes, :published_on, :author_id]
      change AshApp.Changes.CopyAuthorName
      change AshApp.Changes.CountPostOnAuthor
    end

    create :import do
      accept [:title, :likes, :published_on, :author_id]
    end

    # a read whose `modify_query` hook changes the data layer query (to read nothing)
    read :hidden do
      modify_query {AshApp.Post.HideAll, :modify, []}
    end

    update :update do
      primary? true
      accept [:title, :likes, :published_on]
    end

    read :paged do
      pagination offset?: true, keyset?: true, countable: true, required?: false
    end

    read :keyset do
      pagination keyset?: true, countable: true, required?: false
    end
  end
end

defmodule AshApp.Post.HideAll do
  @moduledoc "A `modify_query` hook: the data layer query reads no record (`limit: 0`)."
  def modify(_ash_query, data_layer_query), do: {:ok, %{data_layer_query | limit: 0}}
end
