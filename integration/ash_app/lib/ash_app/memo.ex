defmodule AshApp.Memo do
  @moduledoc """
  A memo with `:context` multitenancy (each tenant's records in its own namespace on the node),
  a case-insensitive identity, a typed datetime and a `where` identity.
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  multitenancy do
    strategy :context
  end

  attributes do
    uuid_primary_key :id, writable?: true
    attribute :code, :ci_string, public?: true
    attribute :at, :utc_datetime_usec, public?: true
    attribute :active, :boolean, default: true, public?: true
    attribute :tag, :string, public?: true
  end

  identities do
    identity :unique_code, [:code]
    identity :one_active_tag, [:tag], where: expr(active == true)
  end

  actions do
    defaults [:read, :destroy, create: :*, update: :*]
  end
end
