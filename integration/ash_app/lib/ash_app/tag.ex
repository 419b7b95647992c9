defmodule AshApp.Tag do
  @moduledoc "A resource with a composite primary key (`scope`, `slot`), both writable."
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    attribute :scope, :string, primary_key?: true, allow_nil?: false, public?: true
    attribute :slot, :integer, primary_key?: true, allow_nil?: false, public?: true
    attribute :label, :string, public?: true
  end

  actions do
    defaults [:read, :destroy, create: :*, update: :*]
  end
end
