defmodule AshApp.Note do
  @moduledoc """
  A note in an organisation: `:attribute` multitenancy on `org`, an identity per tenant, and a
  parent note.
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  multitenancy do
    strategy :attribute
    attribute :org
  end

  attributes do
    uuid_primary_key :id, writable?: true
    attribute :org, :string, allow_nil?: false, public?: true
    attribute :slug, :string, public?: true
    attribute :body, :string, public?: true
    attribute :internal, :string, public?: true, select_by_default?: false
  end

  identities do
    identity :unique_slug, [:slug]
  end

  relationships do
    # a filter on it (`parent_note.slug == ...`) is Ash's, which loads it for the read's tenant
    belongs_to :parent_note, AshApp.Note, public?: true, attribute_writable?: true
  end

  actions do
    defaults [:read, :destroy, update: :*]

    create :create do
      primary? true
      accept [:id, :slug, :body, :internal, :parent_note_id]
    end

    create :upsert_slug do
      accept [:slug, :body]
      upsert? true
      upsert_identity :unique_slug
      upsert_fields [:body]
    end
  end
end
