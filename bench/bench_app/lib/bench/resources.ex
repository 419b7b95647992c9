defmodule Bench.Domain do
  @moduledoc "The benchmark's Ash domain: the same person resource on two data layers."
  use Ash.Domain, validate_config_inclusion?: false

  resources do
    resource(Bench.RustPerson)
    resource(Bench.LocalPerson)
  end
end

defmodule Bench.PersonFields do
  @moduledoc false
  # The attributes and actions both resources share.
  defmacro __using__(_) do
    quote do
      attributes do
        attribute(:id, :integer, primary_key?: true, allow_nil?: false, public?: true)
        attribute(:name, :string, public?: true)
        attribute(:age, :integer, public?: true)
        attribute(:team, :string, public?: true)
        attribute(:score, :integer, public?: true, default: 0)
      end

      actions do
        defaults([:read, :destroy, create: :*, update: :*])
      end
    end
  end
end

defmodule Bench.RustPerson do
  @moduledoc "Records on the Rust node (`AshGenServer.DataLayer`)."
  use Ash.Resource, domain: Bench.Domain, data_layer: AshGenServer.DataLayer
  use Bench.PersonFields
end

defmodule Bench.LocalPerson do
  @moduledoc "Records as GenServers on this node (`Bench.InProcessDataLayer`, the original design)."
  use Ash.Resource, domain: Bench.Domain, data_layer: Bench.InProcessDataLayer
  use Bench.PersonFields
end
