defmodule AshApp.Reading do
  @moduledoc """
  A sensor reading without a primary key (`require_primary_key? false`): the node keys each
  record by a hidden generated key, so equal readings are distinct records. It belongs to an
  author, and expires after 1 s without being touched (raw destroy: Ash cannot destroy a record
  without a primary key).
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    inactivity_timeout 1_000
  end

  resource do
    require_primary_key? false
  end

  attributes do
    attribute :celsius, :float, public?: true
    attribute :taken_at, :utc_datetime_usec, public?: true
  end

  relationships do
    belongs_to :author, AshApp.Author, public?: true, attribute_writable?: true
  end

  actions do
    defaults [:read, create: :*]
  end
end
