defmodule AshApp.Seat do
  @moduledoc """
  A seat: `[:row, :number]` is unique with `nils_distinct?: false` (a seat without a number
  counts once per row, as a unique index with `NULLS NOT DISTINCT` would), `[:code]` is unique
  with nils distinct (any number of seats without a code).
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    uuid_primary_key :id, writable?: true
    attribute :row, :string, public?: true
    attribute :number, :integer, public?: true
    attribute :code, :string, public?: true
    attribute :holder, :string, public?: true
  end

  identities do
    identity :unique_place, [:row, :number], nils_distinct?: false
    # duplicate errors name `field_names`, not the keys (as ash_postgres reports them)
    identity :unique_code, [:code], field_names: [:ticket]
  end

  actions do
    defaults [:read, :destroy, create: :*, update: :*]

    create :claim do
      accept [:row, :number, :holder]
      upsert? true
      upsert_identity :unique_place
      upsert_fields [:holder]
    end
  end
end
