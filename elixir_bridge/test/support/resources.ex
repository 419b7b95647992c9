defmodule AshGenServer.Test.Domain do
  @moduledoc "A domain for the bridge's unit tests (no node needed)."
  use Ash.Domain, validate_config_inclusion?: false

  resources do
    resource AshGenServer.Test.Thing
    resource AshGenServer.Test.Pair
    resource AshGenServer.Test.Aside
  end
end

defmodule AshGenServer.Test.Thing do
  @moduledoc "A resource with one attribute of each interesting type."
  use Ash.Resource, domain: AshGenServer.Test.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    inactivity_timeout 1_000
    maximum_lifetime :timer.hours(1)
    node :"nowhere@127.0.0.1"
    call_timeout 500
    max_restarts 2
  end

  attributes do
    uuid_primary_key :id
    attribute :name, :string, public?: true
    attribute :count, :integer, public?: true
    attribute :ratio, :float, public?: true
    attribute :active, :boolean, public?: true
    attribute :kind, :atom, public?: true
    attribute :born_on, :date, public?: true
    attribute :at, :utc_datetime_usec, public?: true
    attribute :price, :decimal, public?: true
    attribute :email, :ci_string, public?: true
    attribute :tags, {:array, :string}, public?: true
    attribute :meta, :map, public?: true
  end

  identities do
    identity :unique_name, [:name]
    identity :unique_email, [:email], where: expr(not is_nil(email))
  end

  calculations do
    calculate :double, :integer, expr(count * 2)
  end

  actions do
    defaults [:read, :destroy, create: :*, update: :*]
  end
end

defmodule AshGenServer.Test.Pair do
  @moduledoc "A resource with a composite primary key and no gen_server section."
  use Ash.Resource, domain: AshGenServer.Test.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    attribute :left, :string, primary_key?: true, allow_nil?: false, public?: true
    attribute :right, :integer, primary_key?: true, allow_nil?: false, public?: true
  end

  actions do
    defaults [:read, :destroy, create: :*]
  end
end

defmodule AshGenServer.Test.Aside do
  @moduledoc "A resource whose relationships are never loaded as lateral joins."
  use Ash.Resource, domain: AshGenServer.Test.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    lateral_joins_in_node?(false)
  end

  attributes do
    uuid_primary_key :id
  end

  actions do
    defaults [:read, :destroy, create: :*]
  end
end
