defmodule AshApp.PostTopic do
  @moduledoc """
  The join resource of `AshApp.Post.topics`: its primary key is the pair it joins, so Ash may
  load the relationship with a lateral join. `topic_name` is a ci_string: a join record may
  name its topic in another case than the topic itself.
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    attribute :post_id, :uuid, primary_key?: true, allow_nil?: false, public?: true
    attribute :topic_name, :ci_string, primary_key?: true, allow_nil?: false, public?: true
  end

  actions do
    defaults [:read, :destroy, create: [:post_id, :topic_name]]
  end
end
