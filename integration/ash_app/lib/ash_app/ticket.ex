defmodule AshApp.Ticket do
  @moduledoc """
  A short-lived record with `:context` multitenancy: each tenant's tickets live in their own
  namespace on the node and expire after 200 ms without being touched. Its primary destroy
  action sends `{:destroyed_in_tenant, Ticket, id, reason, tenant}` to the pid in `owner`
  (`AshApp.Changes.ReportTenant`).
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    inactivity_timeout 200
    expiry_grace 2_000
  end

  multitenancy do
    strategy :context
  end

  attributes do
    uuid_primary_key :id, writable?: true
    attribute :owner, :term, public?: true
    attribute :label, :string, public?: true
  end

  actions do
    defaults [:read, create: :*, update: :*]

    destroy :destroy do
      primary? true
      change AshApp.Changes.ReportTenant
    end
  end
end
