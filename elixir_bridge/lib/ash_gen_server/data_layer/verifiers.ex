defmodule AshGenServer.DataLayer.Verifiers do
  @moduledoc """
  Compile-time checks of resources using `AshGenServer.DataLayer`: a definition the data layer
  cannot honour fails compilation with a message saying why, instead of misbehaving at run time.

  - `PrimaryKey`: every resource needs a primary key (the node keys each record's actor by it).
  - `Identities`: every identity key must be an attribute (the node enforces identities on
    stored values; a calculation cannot be enforced atomically).
  - `Multitenancy`: the `:attribute` strategy needs its attribute to exist (the `:context`
    strategy keeps each tenant's records in their own namespace on the node, `{Resource,
    Tenant}`).
  """

  alias Spark.Dsl.Verifier
  alias Spark.Error.DslError

  defmodule PrimaryKey do
    @moduledoc false
    use Spark.Dsl.Verifier

    @impl true
    def verify(dsl_state) do
      if Ash.Resource.Info.primary_key(dsl_state) == [] do
        {:error,
         DslError.exception(
           module: Verifier.get_persisted(dsl_state, :module),
           path: [:attributes],
           message:
             "AshGenServer.DataLayer needs a primary key: each record lives in its own actor " <>
               "on the node, found by its primary key. Add `uuid_primary_key :id` (or mark " <>
               "attributes `primary_key? true`)."
         )}
      else
        :ok
      end
    end
  end

  defmodule Identities do
    @moduledoc false
    use Spark.Dsl.Verifier

    @impl true
    def verify(dsl_state) do
      module = Verifier.get_persisted(dsl_state, :module)

      dsl_state
      |> Ash.Resource.Info.identities()
      |> Enum.find_value(:ok, fn identity ->
        case Enum.reject(identity.keys, &Ash.Resource.Info.attribute(dsl_state, &1)) do
          [] ->
            nil

          missing ->
            {:error,
             DslError.exception(
               module: module,
               path: [:identities, identity.name],
               message:
                 "AshGenServer.DataLayer cannot enforce identity #{inspect(identity.name)}: " <>
                   "its keys #{inspect(missing)} are not attributes. The node enforces " <>
                   "identities atomically on stored attribute values only."
             )}
        end
      end)
    end
  end

  defmodule Multitenancy do
    @moduledoc false
    use Spark.Dsl.Verifier

    @impl true
    def verify(dsl_state) do
      module = Verifier.get_persisted(dsl_state, :module)

      case Ash.Resource.Info.multitenancy_strategy(dsl_state) do
        :attribute ->
          attribute = Ash.Resource.Info.multitenancy_attribute(dsl_state)

          if attribute && Ash.Resource.Info.attribute(dsl_state, attribute) do
            :ok
          else
            {:error,
             DslError.exception(
               module: module,
               path: [:multitenancy, :attribute],
               message:
                 "AshGenServer.DataLayer: the `:attribute` multitenancy strategy needs " <>
                   "`attribute` to name an attribute of the resource (got #{inspect(attribute)})."
             )}
          end

        _ ->
          :ok
      end
    end
  end
end
