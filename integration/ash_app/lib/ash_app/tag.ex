defmodule AshApp.Tag do
  @moduledoc """
  A resource with a composite primary key (`scope`, `slot`), both writable, and a partial
  identity (with a `where`) that only Ash knows about.
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    attribute :scope, :string, primary_key?: true, allow_nil?: false, public?: true
    attribute :slot, :integer, primary_key?: true, allow_nil?: false, public?: true
    attribute :label, :string, public?: true
  end

  identities do
    # A partial identity: the node cannot enforce it, so upserts on it are emulated.
    identity :unique_pinned_label, [:label], where: expr(scope == "pinned")
  end

  actions do
    defaults [:read, :destroy, create: :*, update: :*]

    create :pin do
      accept [:scope, :slot, :label]
      upsert? true
      upsert_identity :unique_pinned_label
      upsert_fields [:slot]
    end
  end
end
