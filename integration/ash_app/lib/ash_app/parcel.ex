defmodule AshApp.Parcel do
  @moduledoc """
  A resource whose node calls time out after 300 ms unless the read gives its own `:timeout`
  (`test/timeouts_test.exs`); its `:patient` read action waits 3 s.
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    call_timeout 300
  end

  attributes do
    uuid_primary_key :id, writable?: true
    attribute :name, :string, public?: true
  end

  actions do
    defaults [:read, :destroy, create: :*]

    read :patient do
      timeout 3_000
    end
  end
end
