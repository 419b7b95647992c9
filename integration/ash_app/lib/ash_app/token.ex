defmodule AshApp.Token do
  @moduledoc """
  A record with a maximum lifetime of 300 ms and no inactivity timeout; its destroy action
  reports like `AshApp.Session`'s.
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    maximum_lifetime 300
    expiry_grace 2_000
  end

  attributes do
    uuid_primary_key :id
    attribute :owner, :term, public?: true
    attribute :label, :string, public?: true
  end

  actions do
    defaults [:read, create: :*, update: :*]

    destroy :destroy do
      # a change that runs Elixir code per record: not an atomic destroy
      require_atomic? false
      primary? true
      change AshApp.Changes.ReportDestroy
    end
  end
end
