defmodule Bench.Domain do
  @moduledoc """
  The benchmark's Ash domain: the same person resource on two data layers (workload 5), and
  pairs of resources on the Rust node that differ in one thing only, to time a feature done in
  the node against the shim's fallback for it (workload 7).
  """
  use Ash.Domain, validate_config_inclusion?: false

  resources do
    resource(Bench.RustPerson)
    resource(Bench.LocalPerson)
    resource(Bench.NodeCounter)
    resource(Bench.CasCounter)
    resource(Bench.TypedEvent)
    resource(Bench.OpaqueEvent)
    resource(Bench.Post)
    resource(Bench.NodeAuthor)
    resource(Bench.FallbackAuthor)
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

defmodule Bench.CounterFields do
  @moduledoc false
  # A counter with an atomic increment (`count + 1`, evaluated in the data layer).
  defmacro __using__(_) do
    quote do
      attributes do
        attribute(:id, :integer, primary_key?: true, allow_nil?: false, public?: true)
        attribute(:count, :integer, allow_nil?: false, default: 0, public?: true)
      end

      actions do
        defaults([:read, :destroy, create: :*])

        update :increment do
          change(atomic_update(:count, expr(^ref(:count) + 1)))
        end
      end
    end
  end
end

defmodule Bench.NodeCounter do
  @moduledoc "The increment is evaluated by the record's actor on the node (one turn)."
  use Ash.Resource, domain: Bench.Domain, data_layer: AshGenServer.DataLayer
  use Bench.CounterFields
end

defmodule Bench.CasCounter do
  @moduledoc """
  The same counter with `atomics_in_node? false`: every increment is the shim's
  compare-and-set loop (read, evaluate with Ash, update guarded by the values read, retry).
  """
  use Ash.Resource, domain: Bench.Domain, data_layer: AshGenServer.DataLayer
  use Bench.CounterFields

  gen_server do
    atomics_in_node?(false)
  end
end

defmodule Bench.OpaqueDatetime do
  @moduledoc """
  `:utc_datetime_usec` under another name: Ash compares, casts and stores its values exactly
  as the built-in type's, but the shim pushes comparisons and sorts down to the node only for
  the types it knows (`AshGenServer.Values.pushdown/1`), so on this type it does what it did
  for every datetime before they were typed on the node: fetch every record, let Ash filter,
  sort and page them.
  """
  use Ash.Type.NewType, subtype_of: :utc_datetime_usec
end

defmodule Bench.EventFields do
  @moduledoc false
  # An event with a timestamp of the given type, read a page at a time, newest first.
  defmacro __using__(at_type) do
    quote do
      attributes do
        attribute(:id, :integer, primary_key?: true, allow_nil?: false, public?: true)
        attribute(:at, unquote(at_type), allow_nil?: false, public?: true)
        attribute(:name, :string, public?: true)
      end

      actions do
        defaults([:destroy, create: :*])

        read :read do
          primary?(true)
          pagination(offset?: true, required?: false, countable: false)
        end
      end
    end
  end
end

defmodule Bench.TypedEvent do
  @moduledoc "`at` is a `:utc_datetime_usec`: filter, sort and page run in the node."
  use Ash.Resource, domain: Bench.Domain, data_layer: AshGenServer.DataLayer
  use Bench.EventFields, :utc_datetime_usec
end

defmodule Bench.OpaqueEvent do
  @moduledoc "`at` is a `Bench.OpaqueDatetime`: every record is fetched, Ash filters, sorts and pages."
  use Ash.Resource, domain: Bench.Domain, data_layer: AshGenServer.DataLayer
  use Bench.EventFields, Bench.OpaqueDatetime
end

defmodule Bench.Post do
  @moduledoc "A post of an author (`author_id`), ranked: the related records of workload 7's loads."
  use Ash.Resource, domain: Bench.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    attribute(:id, :integer, primary_key?: true, allow_nil?: false, public?: true)
    attribute(:author_id, :integer, allow_nil?: false, public?: true)
    attribute(:rank, :integer, allow_nil?: false, public?: true)
    attribute(:title, :string, public?: true)
  end

  actions do
    defaults([:read, :destroy, create: :*])
  end
end

defmodule Bench.AuthorFields do
  @moduledoc false
  # An author with many `Bench.Post`s (the same posts for both author resources).
  defmacro __using__(_) do
    quote do
      attributes do
        attribute(:id, :integer, primary_key?: true, allow_nil?: false, public?: true)
        attribute(:name, :string, public?: true)
      end

      relationships do
        has_many(:posts, Bench.Post, destination_attribute: :author_id, public?: true)
      end

      actions do
        defaults([:read, :destroy, create: :*])
      end
    end
  end
end

defmodule Bench.NodeAuthor do
  @moduledoc "Posts loaded with a limit are a lateral join: one partitioned query in the node."
  use Ash.Resource, domain: Bench.Domain, data_layer: AshGenServer.DataLayer
  use Bench.AuthorFields
end

defmodule Bench.FallbackAuthor do
  @moduledoc """
  The same author with `lateral_joins_in_node? false`: Ash loads the posts its own way, every
  post of the authors read and each author's sorted and limited in memory.
  """
  use Ash.Resource, domain: Bench.Domain, data_layer: AshGenServer.DataLayer
  use Bench.AuthorFields

  gen_server do
    lateral_joins_in_node?(false)
  end
end
