defmodule AshApp.ConventionsTest do
  @moduledoc """
  Conventions: definitions the data layer cannot honour fail to compile with a clear message;
  `sensitive?` values stay out of telemetry; `select` goes to the node; skipped bulk upserts
  come back with `return_skipped_upsert?`.
  """
  use AshApp.Case, async: false

  test "a resource without a primary key does not compile" do
    # (on Elixir 1.14 a verifier's error is printed as a compile warning, an error with
    # --warnings-as-errors; it is checked here by calling the verifier)
    ExUnit.CaptureIO.capture_io(:stderr, fn ->
      Code.compile_string("""
      defmodule AshApp.ConventionsTest.NoKey do
        use Ash.Resource, domain: nil, data_layer: AshGenServer.DataLayer
        resource do
          require_primary_key? false
        end
        attributes do
          attribute :name, :string, public?: true
        end
      end
      """)
    end)

    module = AshApp.ConventionsTest.NoKey

    assert {:error, error} =
             AshGenServer.DataLayer.Verifiers.PrimaryKey.verify(module.spark_dsl_config())

    assert Exception.message(error) =~ "needs a primary key"
    refute Ash.DataLayer.data_layer_can?(module, :update)
    refute Ash.DataLayer.data_layer_can?(module, :destroy)
  end

  test "sensitive values are left out of the telemetry metadata" do
    {counter, requests} =
      with_requests(fn ->
        Counter |> Ash.Changeset.for_create(:create, %{secret: "hunter2"}) |> Ash.create!()
      end)

    assert counter.secret == "hunter2"
    refute inspect(requests) =~ "hunter2"
    assert [%{message: {:create, Counter, %{secret: :redacted}}}] = requests
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
