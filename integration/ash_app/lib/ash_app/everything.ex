defmodule AshApp.Address do
  @moduledoc "An embedded resource, stored inside `AshApp.Everything` records."
  use Ash.Resource, data_layer: :embedded

  attributes do
    attribute :street, :string, public?: true
    attribute :zip, :integer, public?: true
  end
end

defmodule AshApp.Everything do
  @moduledoc "One attribute of (almost) every Ash type, to check values round-trip through the node."
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    uuid_primary_key :id
    attribute :string, :string, public?: true
    attribute :integer, :integer, public?: true
    attribute :float, :float, public?: true
    attribute :boolean, :boolean, public?: true
    attribute :atom, :atom, public?: true
    attribute :uuid, :uuid, public?: true
    attribute :date, :date, public?: true
    attribute :time, :time, public?: true
    attribute :utc, :utc_datetime_usec, public?: true
    attribute :naive, :naive_datetime, public?: true
    attribute :decimal, :decimal, public?: true
    attribute :ci, :ci_string, public?: true
    attribute :map, :map, public?: true
    attribute :strings, {:array, :string}, public?: true
    attribute :binary, :binary, public?: true
    attribute :term, :term, public?: true
    attribute :address, AshApp.Address, public?: true
    attribute :addresses, {:array, AshApp.Address}, public?: true
  end

  actions do
    defaults [:read, :destroy, create: :*, update: :*]
  end
end
