defmodule AshApp.ExpiryLog do
  @moduledoc "One entry per destroy reported by `AshApp.Changes.ReportDestroy`."
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    uuid_primary_key :id
    attribute :resource, :atom, public?: true
    attribute :record_id, :uuid, public?: true
    attribute :reason, :atom, public?: true
  end

  actions do
    defaults [:read, :destroy, create: :*]
  end
end
