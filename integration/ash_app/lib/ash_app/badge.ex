defmodule AshApp.Badge do
  @moduledoc """
  `AshApp.Ticket` with `:attribute` multitenancy on `org`: a short-lived record whose primary
  destroy action reports the tenant it ran for (`AshApp.Changes.ReportTenant`).
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    inactivity_timeout 200
    expiry_grace 2_000
  end

  multitenancy do
    strategy :attribute
    attribute :org
  end

  attributes do
    uuid_primary_key :id, writable?: true
    attribute :org, :string, allow_nil?: false, public?: true
    attribute :owner, :term, public?: true
  end

  actions do
    defaults [:read]

    create :create do
      primary? true
      accept [:id, :owner]
    end

    destroy :destroy do
      primary? true
      change AshApp.Changes.ReportTenant
    end
  end
end
