defmodule AshApp.Secret do
  @moduledoc """
  A secret each actor may read only if they own it (a read policy), with an unrelated
  aggregate over the secrets of the same topic and a calculation using it: the aggregate must
  count only the secrets the actor may read. `AshApp.Vault` counts them from another resource.
  """
  use Ash.Resource,
    domain: AshApp.Domain,
    data_layer: AshGenServer.DataLayer,
    authorizers: [Ash.Policy.Authorizer]

  attributes do
    uuid_primary_key :id
    attribute :topic, :string, public?: true
    attribute :owner, :string, public?: true
  end

  aggregates do
    count :same_topic_count, AshApp.Secret do
      filter expr(topic == parent(topic))
      public? true
    end
  end

  calculations do
    calculate :summary, :string, expr("seen " <> type(same_topic_count, :string)), public?: true
  end

  actions do
    defaults [:read, create: :*]
  end

  policies do
    policy action_type(:create) do
      authorize_if always()
    end

    policy action_type(:read) do
      authorize_if expr(owner == ^actor(:name))
    end
  end
end

defmodule AshApp.Vault do
  @moduledoc """
  A vault anyone may read, with an unrelated aggregate over the `AshApp.Secret`s of its topic,
  used by a calculation only (the secrets' read policy must still apply to the count), and a
  key secret read with `authorize_read_with :error`.
  """
  use Ash.Resource,
    domain: AshApp.Domain,
    data_layer: AshGenServer.DataLayer,
    authorizers: [Ash.Policy.Authorizer]

  attributes do
    uuid_primary_key :id
    attribute :topic, :string, public?: true
  end

  relationships do
    # a secret the actor may not read loads as %Ash.ForbiddenField{}, not as nil
    belongs_to :key_secret, AshApp.Secret do
      public? true
      attribute_writable? true
      authorize_read_with :error
      allow_forbidden_field? true
    end
  end

  aggregates do
    count :secret_count, AshApp.Secret do
      filter expr(topic == parent(topic))
      public? true
    end
  end

  calculations do
    calculate :summary, :string, expr("holds " <> type(secret_count, :string)), public?: true
  end

  actions do
    defaults [:read, create: :*]
  end

  policies do
    policy always() do
      authorize_if always()
    end
  end
end
