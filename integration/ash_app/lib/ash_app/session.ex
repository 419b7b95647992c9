defmodule AshApp.Session do
  @moduledoc """
  A short-lived record: it expires after 200 ms without being touched. Its primary destroy
  action reports every destroy (expiry or not) to the pid in `owner` and logs it in
  `AshApp.ExpiryLog`.
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    inactivity_timeout 200
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
