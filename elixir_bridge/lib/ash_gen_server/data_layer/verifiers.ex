defmodule AshGenServer.DataLayer.Verifiers do
  @moduledoc """
  Compile-time checks of resources using `AshGenServer.DataLayer`: a definition the data layer
  cannot honour fails compilation with a message saying why, instead of misbehaving at run time.

  - `Identities`: every identity key must be an attribute (the node enforces identities on
    stored values; a calculation cannot be enforced atomically).
  - `IdentityWhere`: an identity's `where` must be a filter the node evaluates exactly
    (comparisons of attributes with values, `and`/`or`/`not`; see `AshGenServer.Filter`),
    since the node enforces the identity, atomically, only on the records the `where` selects
    (as a partial unique index does). Otherwise the identity would not be enforced at all,
    unless it asks Ash to check it (`pre_check?: true` or `pre_check_with`): a read before each
    create or update, which concurrent writes can both pass. Ash's own ETS and Mnesia data
    layers likewise require `pre_check_with` for the identities they cannot enforce.

  An `:attribute` multitenancy strategy needs its attribute to exist: Ash's own
  `Ash.Resource.Verifiers.ValidateMultitenancy` checks that (the `:context` strategy keeps each
  tenant's records in their own namespace on the node, `{Resource, Tenant}`).
  """

  alias Spark.Dsl.Verifier
  alias Spark.Error.DslError

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

  defmodule IdentityWhere do
    @moduledoc false
    use Spark.Dsl.Verifier

    @impl true
    def verify(dsl_state) do
      module = Verifier.get_persisted(dsl_state, :module)

      dsl_state
      |> Ash.Resource.Info.identities()
      |> Enum.find_value(:ok, fn identity ->
        cond do
          is_nil(identity.where) or identity.pre_check_with ->
            nil

          # keys that are not attributes: the `Identities` verifier says so
          not Enum.all?(identity.keys, &Ash.Resource.Info.attribute(dsl_state, &1)) ->
            nil

          AshGenServer.DataLayer.Info.node_where(module, identity) != :error ->
            nil

          true ->
            {:error,
             DslError.exception(
               module: module,
               path: [:identities, identity.name, :where],
               message:
                 "AshGenServer.DataLayer cannot enforce identity #{inspect(identity.name)}: " <>
                   "the node enforces it on the records its `where` selects, and cannot " <>
                   "evaluate this one (#{inspect(identity.where)}) exactly. It evaluates " <>
                   "comparisons of attributes with values (`==`, `<`, `in`, `is_nil`...) " <>
                   "joined with `and`, `or` and `not`, on attributes of the types it compares; " <>
                   "not calculations, aggregates, relationships or functions such as " <>
                   "`string_length`. Write the `where` so, " <>
                   "or set `pre_check?: true` on the identity to have Ash check it with a read " <>
                   "before each create and update (not atomic: two concurrent writes can both " <>
                   "pass)."
             )}
        end
      end)
    end
  end
end
