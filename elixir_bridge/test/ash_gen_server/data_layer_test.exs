defmodule AshGenServer.DataLayerTest do
  # not async: one test changes the application environment
  use ExUnit.Case, async: false

  alias AshGenServer.DataLayer.Info
  alias AshGenServer.Test.{Pair, Thing}

  test "the DSL is read, `node` included" do
    assert Info.node(Thing) == :"nowhere@127.0.0.1"
    assert Info.call_timeout(Thing) == 500
    assert Info.inactivity_timeout(Thing) == 1_000
    assert Info.maximum_lifetime(Thing) == :timer.hours(1)
    assert Info.inactivity_timeout(Pair) == :infinity
  end

  test "define options carry the primary key and the identities the node can enforce" do
    assert %{
             primary_key: [:id],
             identities: [
               {:unique_name, [:name]},
               {:unique_email, [:email], %{where: {:not, {:is_nil, :email}}, nils_distinct: true}}
             ],
             types: %{born_on: :date, email: :ci_string, price: :decimal},
             inactivity_timeout: 1_000,
             maximum_lifetime: 3_600_000,
             max_restarts: 2
           } = Info.define_options(Thing)

    assert %{primary_key: [:left, :right], identities: []} = Info.define_options(Pair)
  end

  test "the node falls back to the application environment" do
    assert Info.node(Pair) == Application.get_env(:ash_gen_server, :node)
  end

  test "an unreachable node is a clear Ash error, not an exit" do
    assert {:error, %Ash.Error.Invalid{errors: [error]}} = Ash.read(Thing)
    assert %Ash.Error.Invalid.Unavailable{resource: Thing} = error
    assert Exception.message(error) =~ "nowhere@127.0.0.1"

    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Invalid.Unavailable{}]}} =
             Thing |> Ash.Changeset.for_create(:create, %{name: "x"}) |> Ash.create()
  end

  test "a resource with no node at all says so" do
    previous = Application.get_env(:ash_gen_server, :node)
    Application.delete_env(:ash_gen_server, :node)

    try do
      assert {:error, %Ash.Error.Invalid{errors: [error]}} = Ash.read(Pair)
      assert Exception.message(error) =~ "No ash_gen_server node is configured"
    after
      if previous, do: Application.put_env(:ash_gen_server, :node, previous)
    end
  end

  test "capabilities" do
    for feature <- [
          :create,
          :read,
          :update,
          :destroy,
          :filter,
          :sort,
          :offset,
          :limit,
          :upsert,
          :bulk_create,
          :changeset_filter,
          :composite_primary_key,
          {:aggregate, :count},
          {:query_aggregate, :list}
        ] do
      assert AshGenServer.DataLayer.can?(Thing, feature), inspect(feature)
    end

    refute AshGenServer.DataLayer.can?(Thing, :transact)
    # a bulk create's batch is all or nothing: Ash stops at a failing batch's first error
    refute AshGenServer.DataLayer.can?(Thing, :bulk_create_with_partial_success)
    refute AshGenServer.DataLayer.can?(Thing, {:aggregate, :custom})
  end
end
