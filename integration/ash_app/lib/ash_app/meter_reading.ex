defmodule AshApp.MeterReading do
  @moduledoc """
  A meter reading: a plain resource only `test/metrics_test.exs` uses, so the node's record
  gauge for it moves exactly as that test's requests do.
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    uuid_primary_key :id
    attribute :meter, :string, public?: true
    attribute :value, :integer, public?: true
  end

  actions do
    defaults [:read, :destroy, create: :*, update: :*]
  end
end
