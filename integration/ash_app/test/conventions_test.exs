defmodule AshApp.ConventionsTest do
  @moduledoc """
  Conventions: definitions the data layer cannot honour fail to compile with a clear message
  (an identity `where` the node cannot evaluate; resources without a primary key are in
  `no_primary_key_test.exs`);
  `sensitive?` values stay out of telemetry; `select` goes to the node; skipped bulk upserts
  come back with `return_skipped_upsert?`.
  """
  use AshApp.Case, async: false

  test "an :attribute multitenancy strategy without its attribute gets Ash's own message" do
    # (on Elixir 1.14 a verifier's error is printed as a compile warning)
    output =
      ExUnit.CaptureIO.capture_io(:stderr, fn ->
        Code.compile_string("""
        defmodule AshApp.ConventionsTest.NoTenantAttribute do
          use Ash.Resource, domain: nil, data_layer: AshGenServer.DataLayer
          attributes do
            uuid_primary_key :id
          end
          multitenancy do
            strategy :attribute
          end
        end
        """)
      end)

    assert output =~ "no `attribute` is configured"
    refute output =~ "AshGenServer.DataLayer"
  end

  test "an identity whose where the node cannot evaluate does not compile, unless pre-checked" do
    # (on Elixir 1.14 a verifier's error is printed as a compile warning, an error with
    # --warnings-as-errors; it is checked here by calling the verifier)
    ExUnit.CaptureIO.capture_io(:stderr, fn ->
      for {name, pre_check} <- [
            {"Unchecked", ""},
            {"PreChecked", ", pre_check_with: AshApp.Domain"}
          ] do
        Code.compile_string("""
        defmodule AshApp.ConventionsTest.#{name} do
          use Ash.Resource, domain: nil, data_layer: AshGenServer.DataLayer
          attributes do
            uuid_primary_key :id
            attribute :tag, :string, public?: true
            attribute :active, :boolean, public?: true
          end
          identities do
            identity :exact, [:tag], where: expr(active == true)
            identity :long_tags, [:tag], where: expr(string_length(tag) > 3)#{pre_check}
          end
        end
        """)
      end
    end)

    verify = &AshGenServer.DataLayer.Verifiers.IdentityWhere.verify(&1.spark_dsl_config())

    assert {:error, error} = verify.(AshApp.ConventionsTest.Unchecked)
    message = Exception.message(error)
    assert message =~ "cannot enforce identity :long_tags"
    assert message =~ "pre_check?: true"

    # Ash checks it before each write (the node enforces the exact one): the user's choice
    assert :ok = verify.(AshApp.ConventionsTest.PreChecked)

    assert [{:exact, [:tag], %{where: _}}] =
             AshGenServer.DataLayer.Info.node_identities(AshApp.ConventionsTest.PreChecked)

    # every identity of the suite's own resources is one the node enforces
    for resource <- Ash.Domain.Info.resources(AshApp.Domain) do
      assert :ok = verify.(resource)
    end
  end

  test "an identity on a calculation does not compile" do
    # (on Elixir 1.14 a verifier's error is printed as a compile warning: checked by calling
    # the verifier)
    ExUnit.CaptureIO.capture_io(:stderr, fn ->
      Code.compile_string("""
      defmodule AshApp.ConventionsTest.CalculatedIdentity do
        use Ash.Resource, domain: nil, data_layer: AshGenServer.DataLayer
        attributes do
          uuid_primary_key :id
          attribute :name, :string, public?: true
        end
        calculations do
          calculate :upper, :string, expr(string_upcase(name))
        end
        identities do
          identity :unique_upper, [:upper]
        end
      end
      """)
    end)

    verify = &AshGenServer.DataLayer.Verifiers.Identities.verify(&1.spark_dsl_config())

    assert {:error, error} = verify.(AshApp.ConventionsTest.CalculatedIdentity)
    message = Exception.message(error)
    assert message =~ "cannot enforce identity :unique_upper"
    assert message =~ "[:upper] are not attributes"

    for resource <- Ash.Domain.Info.resources(AshApp.Domain) do
      assert :ok = verify.(resource)
    end
  end

  test "sensitive values are left out of the telemetry metadata" do
    {counter, requests} =
      with_requests(fn ->
        Counter |> Ash.Changeset.for_create(:create, %{secret: "hunter2"}) |> Ash.create!()
      end)

    assert counter.secret == "hunter2"
    refute inspect(requests) =~ "hunter2"
    assert [%{message: {:create, Counter, %{secret: :redacted}}}] = requests

    # an atomic update that sets and reads a sensitive attribute, a filter expression that
    # reads one (`{expr, ...}` with its literals)
    {_, requests} =
      with_requests(fn ->
        Counter
        |> Ash.Query.filter(id == ^counter.id)
        |> Ash.bulk_update!(:update, %{},
          strategy: :atomic,
          atomic_update: %{
            secret: Ash.Expr.expr(secret <> "hunter3"),
            count: Ash.Expr.expr(if(secret == "hunter4", do: 1, else: 2))
          }
        )

        Counter
        |> Ash.Query.filter(secret <> "x" == "hunter5x")
        |> Ash.read!()
      end)

    assert Ash.get!(Counter, counter.id).secret == "hunter2hunter3"
    refute inspect(requests, limit: :infinity) =~ "hunter"

    assert Enum.any?(requests, &match?(%{message: {:query, Counter, %{filter: {:expr, _}}}}, &1))
  end

  test "select goes to the node; select_by_default? false attributes are not sent" do
    Note
    |> Ash.Changeset.for_create(:create, %{slug: "s", body: "b", internal: "i"}, tenant: "a")
    |> Ash.create!()

    {[note], requests} =
      with_requests(fn ->
        Note |> Ash.Query.select([:slug]) |> Ash.Query.limit(5) |> Ash.read!(tenant: "a")
      end)

    assert note.slug == "s"
    assert [%{message: {:query, Note, %{select: select}}, reply: {:ok, [stored]}}] = requests
    assert :slug in select
    refute Map.has_key?(stored, :body)

    assert [%{internal: %Ash.NotLoaded{}}] = Ash.read!(Note, tenant: "a")
  end

  test "bulk upserts return the skipped records when asked" do
    Counter
    |> Ash.Changeset.for_create(:newer, %{name: "doc", version: 5, label: "v5"})
    |> Ash.create!()

    result =
      Ash.bulk_create!([%{name: "doc", version: 1, label: "v1"}], Counter, :newer,
        return_records?: true,
        return_skipped_upsert?: true
      )

    assert [%{label: "v5"}] = result.records
  end
end
