defmodule AshApp.TenancyTest do
  @moduledoc """
  Multitenancy: `:attribute` (`Note`: identities and upserts per tenant) and `:context` (`Memo`:
  each tenant's own namespace on the node). One tenant never sees or changes another's records.
  Expired records are destroyed through their destroy action for their own tenant (`Visit`,
  `:context`; `Badge`, `:attribute`).
  """
  use AshApp.Case, async: false

  defp note!(tenant, attrs),
    do: Note |> Ash.Changeset.for_create(:create, attrs, tenant: tenant) |> Ash.create!()

  defp memo!(tenant, attrs),
    do: Memo |> Ash.Changeset.for_create(:create, attrs, tenant: tenant) |> Ash.create!()

  test ":attribute: a filter Ash evaluates through a relationship runs for the read's tenant" do
    root = note!("a", %{slug: "root"})
    note!("a", %{slug: "child", parent_note_id: root.id})
    note!("b", %{slug: "root"})

    assert [%{slug: "child"}] =
             Note
             |> Ash.Query.filter(parent_note.slug == "root")
             |> Ash.read!(tenant: "a")

    assert [] = Note |> Ash.Query.filter(parent_note.slug == "root") |> Ash.read!(tenant: "b")
  end

  test ":attribute: reads, identities and upserts stay within the tenant" do
    note!("a", %{slug: "hello", body: "a1"})
    note!("b", %{slug: "hello", body: "b1"})

    assert [%{org: "a", body: "a1"}] = Ash.read!(Note, tenant: "a")
    assert [%{org: "b", body: "b1"}] = Ash.read!(Note, tenant: "b")

    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.InvalidAttribute{}]}} =
             Note
             |> Ash.Changeset.for_create(:create, %{slug: "hello"}, tenant: "a")
             |> Ash.create()

    Note
    |> Ash.Changeset.for_create(:upsert_slug, %{slug: "hello", body: "a2"}, tenant: "a")
    |> Ash.create!()

    assert [%{body: "a2"}] = Ash.read!(Note, tenant: "a")
    assert [%{body: "b1"}] = Ash.read!(Note, tenant: "b")
  end

  test ":context: each tenant has its own records, identities and clear" do
    memo!("a", %{code: "X1", tag: "t"})
    memo!("b", %{code: "x1", tag: "t"})

    assert [%{code: code}] = Ash.read!(Memo, tenant: "a")
    assert to_string(code) == "X1"
    assert [_] = Ash.read!(Memo, tenant: "b")

    # ci_string identity: case-insensitive, within the tenant
    assert {:error, %Ash.Error.Invalid{}} =
             Memo
             |> Ash.Changeset.for_create(:create, %{code: "x1"}, tenant: "a")
             |> Ash.create()

    [a_memo] = Ash.read!(Memo, tenant: "a")

    # in tenant b the record is not there: the update finds nothing to change
    assert {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.StaleRecord{}]}} =
             a_memo
             |> Ash.Changeset.for_update(:update, %{tag: "changed"}, tenant: "b")
             |> Ash.update()

    assert [%{tag: "t"}] = Ash.read!(Memo, tenant: "a")
    assert {:ok, 1} = AshGenServer.request(Memo, {:clear, {Memo, "a"}})
    assert [] = Ash.read!(Memo, tenant: "a")
    assert [_] = Ash.read!(Memo, tenant: "b")
  end

  test "an identity with a where is enforced only where it holds" do
    memo!("a", %{code: "c1", tag: "t", active: true})
    memo!("a", %{code: "c2", tag: "t", active: false})

    assert {:error, %Ash.Error.Invalid{}} =
             Memo
             |> Ash.Changeset.for_create(:create, %{code: "c3", tag: "t", active: true},
               tenant: "a"
             )
             |> Ash.create()
  end

  test "typed datetimes filter, sort and page in the node" do
    base = ~U[2026-01-01 00:00:00.000000Z]

    for i <- 1..20, do: memo!("a", %{code: "m#{i}", at: DateTime.add(base, i * 3600)})

    {records, requests} =
      with_requests(fn ->
        Memo
        |> Ash.Query.filter(at > ^DateTime.add(base, 5 * 3600))
        |> Ash.Query.sort(at: :desc)
        |> Ash.Query.limit(3)
        |> Ash.read!(tenant: "a")
      end)

    assert Enum.map(records, &to_string(&1.code)) == ["m20", "m19", "m18"]
    assert [%{request: :query, message: {:query, {Memo, "a"}, %{limit: 3}}}] = requests
  end

  defp visit!(tenant, id),
    do:
      Visit
      |> Ash.Changeset.for_create(:create, %{id: id, owner: self(), label: tenant}, tenant: tenant)
      |> Ash.create!()

  test ":context: an expired record is destroyed through its action, for its own tenant" do
    # the same primary key in two tenants: two records, each expiring in its own namespace
    id = Ash.UUID.generate()

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        for tenant <- ["a", "b"], do: visit!(tenant, id)

        assert_receive {:destroyed_in_tenant, Visit, ^id, :inactivity_timeout, "a"}, 3_000
        assert_receive {:destroyed_in_tenant, Visit, ^id, :inactivity_timeout, "b"}, 3_000
        assert [] = Ash.read!(Visit, tenant: "a")
        assert [] = Ash.read!(Visit, tenant: "b")
      end)

    # the destroy action ran; the handler did not fall back to removing the records itself
    refute log =~ "removing the record directly"
  end

  test ":context: keep_alive and whereis reach the record in its tenant's namespace" do
    id = Ash.UUID.generate()
    kept = visit!("a", id)
    visit!("b", id)

    assert {:ok, pid_a} = AshGenServer.whereis(kept)
    assert {:ok, pid_b} = AshGenServer.whereis(Ash.get!(Visit, id, tenant: "b"))
    assert pid_a != pid_b

    # keep-alives of the "a" record every 50 ms (its timeout is 200 ms) until "b" has expired
    stop_at = System.monotonic_time(:millisecond) + 3_000

    b_expired =
      Stream.repeatedly(fn ->
        AshGenServer.keep_alive(kept)

        receive do
          {:destroyed_in_tenant, Visit, ^id, reason, "b"} -> {:b_expired, reason}
        after
          50 -> :waiting
        end
      end)
      |> Enum.find(&(&1 != :waiting or System.monotonic_time(:millisecond) > stop_at))

    assert b_expired == {:b_expired, :inactivity_timeout}
    refute_received {:destroyed_in_tenant, Visit, ^id, _, "a"}
    assert {:ok, ^pid_a} = AshGenServer.whereis(kept)
    assert [%{label: "a"}] = Ash.read!(Visit, tenant: "a")

    assert_receive {:destroyed_in_tenant, Visit, ^id, :inactivity_timeout, "a"}, 3_000
  end

  test ":attribute: an expired record is destroyed through its action, for its tenant" do
    log =
      ExUnit.CaptureLog.capture_log(fn ->
        badge =
          Badge
          |> Ash.Changeset.for_create(:create, %{owner: self()}, tenant: "a")
          |> Ash.create!()

        id = badge.id
        assert_receive {:destroyed_in_tenant, Badge, ^id, :inactivity_timeout, "a"}, 3_000
        assert [] = Ash.read!(Badge, tenant: "a")
      end)

    refute log =~ "removing the record directly"
  end
end
