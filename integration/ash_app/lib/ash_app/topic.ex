defmodule AshApp.Topic do
  @moduledoc """
  A topic, named by a case-insensitive string, that posts are filed under
  (`AshApp.Post.topics`, a `many_to_many` through `AshApp.PostTopic`). Its `:paged` (offset,
  by default) and `:keyset` read actions paginate, for loading a page of each post's topics (a
  lateral join).
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    attribute :name, :ci_string, primary_key?: true, allow_nil?: false, public?: true
    attribute :rank, :integer, public?: true
  end

  actions do
    defaults [:read, :destroy, create: [:name, :rank]]

    read :paged do
      pagination offset?: true, keyset?: true, countable: true, required?: false
    end

    read :keyset do
      pagination keyset?: true, countable: true, required?: false
    end
  end
end
