defmodule AshApp.Orphan do
  @moduledoc "A resource configured (DSL `node`) for a node that does not exist."
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    node :"nobody_home@127.0.0.1"
    call_timeout 2_000
  end

  attributes do
    uuid_primary_key :id
    attribute :name, :string, public?: true
  end

  actions do
    defaults [:read, :destroy, create: :*]
  end
end
