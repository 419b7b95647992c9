defmodule AshApp.Fragile do
  @moduledoc """
  A record for the supervision tests (run against a node started with
  `--enable-fault-injection`): its supervisor gives up after 2 restarts within 10 s.
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    max_restarts 2
    max_seconds 10
  end

  attributes do
    uuid_primary_key :id
    attribute :value, :integer, public?: true
  end

  actions do
    defaults [:read, :destroy, create: :*, update: :*]
  end
end
