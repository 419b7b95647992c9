defmodule AshApp.ClientTest do
  @moduledoc """
  `AshGenServer.Client`, the protocol for code without Ash, against the real node: every
  function, its typed results and its errors (unknown resource, missing record, node down...),
  and a VM that has no Ash at all.
  """
  use ExUnit.Case, async: false

  import AshApp.Helpers

  alias AshGenServer.Client
  alias AshGenServer.Client.Error

  # Plain atoms: resources no Ash module knows.
  @user :client_test_user
  @item :client_test_item

  setup do
    :ok = Client.define(@user, primary_key: [:id], identities: [{:unique_email, [:email]}])
    :ok = Client.define(@item, %{primary_key: [:id], types: %{label: :ci_string}})
    {:ok, _} = Client.clear(@user)
    {:ok, _} = Client.clear(@item)
    :ok
  end

  defp user!(id, fields \\ %{}) do
    {:ok, user} =
      Client.create(@user, Map.merge(%{id: id, name: "user#{id}", age: 20 + id}, fields))

    user
  end

  describe "resources" do
    test "define, info, resources, clear" do
      assert {:ok, %{primary_key: [:id], count: 0}} = Client.info(@user)
      user!(1)
      user!(2)
      assert {:ok, %{count: 2, inactivity_timeout: :infinity}} = Client.info(@user)
      assert {:ok, resources} = Client.resources()
      assert @user in resources and @item in resources

      # defining again updates the options
      :ok = Client.define(@user, primary_key: [:id], inactivity_timeout: 60_000)
      assert {:ok, %{inactivity_timeout: 60_000, count: 2}} = Client.info(@user)

      assert {:ok, 2} = Client.clear(@user)
      assert {:ok, %{count: 0}} = Client.info(@user)
    end

    test "define errors: another primary key while holding records, a bad option" do
      user!(1)

      assert {:error, %Error{reason: {:primary_key_mismatch, [:id]}} = error} =
               Client.define(@user, primary_key: [:name])

      assert Exception.message(error) =~ "already defined there with primary key [:id]"

      assert {:error, %Error{reason: {:bad_request, message}, request: :define}} =
               Client.define(:client_test_bad, primary_key: [])

      assert is_binary(message)
    end

    test "a resource that is not defined is {:unknown_resource, r} for every request" do
      r = :client_test_never_defined
      pk = %{id: 1}

      for result <- [
            Client.get(r, pk),
            Client.create(r, %{id: 1}),
            Client.update(r, pk, %{a: 1}),
            Client.destroy(r, pk),
            Client.upsert(r, %{id: 1}),
            Client.query(r),
            Client.aggregate(r, [{:n, :count}]),
            Client.update_where(r, set: %{a: 1}),
            Client.destroy_where(r),
            Client.whereis(r, pk),
            Client.keep_alive(r, pk),
            Client.info(r),
            Client.clear(r)
          ] do
        assert {:error, %Error{reason: {:unknown_resource, ^r}, resource: ^r} = error} = result
        assert Exception.message(error) =~ "is not defined on the node"
      end
    end
  end

  describe "records" do
    test "create, get, update, destroy and their errors" do
      assert {:ok, %{id: 1, name: "ann", tags: ["a", :b, {1, 2.0}]}} =
               Client.create(@user, %{id: 1, name: "ann", tags: ["a", :b, {1, 2.0}]})

      assert {:error, %Error{reason: {:already_exists, %{id: 1}}} = error} =
               Client.create(@user, %{id: 1})

      assert Exception.message(error) =~ "already exists"
      assert {:error, %Error{reason: {:missing_primary_key, [:id]}}} = Client.create(@user, %{})

      assert {:ok, %{id: 1, name: "ann"}} = Client.get(@user, %{id: 1})

      assert {:error, %Error{reason: :not_found, request: :get, resource: @user} = error} =
               Client.get(@user, %{id: 2})

      assert Exception.message(error) =~ "no record with that primary key"

      assert {:ok, %{id: 1, name: "bea", age: 41}} =
               Client.update(@user, %{id: 1}, %{name: "bea", age: 41})

      assert {:error, %Error{reason: :not_found}} = Client.update(@user, %{id: 2}, %{name: "x"})

      assert {:error, %Error{reason: :stale}} =
               Client.update(@user, %{id: 1}, %{name: "x"}, filter: {:eq, :name, "ann"})

      assert {:ok, %{name: "cid", age: 42}} =
               Client.update(@user, %{id: 1}, %{name: "cid"},
                 filter: {:eq, :name, "bea"},
                 atomics: [age: {:+, {:ref, :age}, {:value, 1}}]
               )

      assert {:error, %Error{reason: {:expr_error, :boom}}} =
               Client.update(@user, %{id: 1}, %{}, atomics: [age: {:error, :boom}])

      assert {:ok, %{name: "cid", age: 42}} = Client.get(@user, %{id: 1})

      assert {:error, %Error{reason: :stale}} =
               Client.destroy(@user, %{id: 1}, filter: {:eq, :name, "nope"})

      assert :ok = Client.destroy(@user, %{id: 1})
      assert {:error, %Error{reason: :not_found}} = Client.destroy(@user, %{id: 1})
      assert {:error, %Error{reason: :not_found}} = Client.get(@user, %{id: 1})
    end

    test "identities are enforced" do
      user!(1, %{email: "a@x"})

      assert {:error, %Error{reason: {:identity_conflict, :unique_email, %{email: "a@x"}}} = e} =
               Client.create(@user, %{id: 2, email: "a@x"})

      assert Exception.message(e) =~ "identity :unique_email is already taken"
    end

    test "upsert: created, updated, skipped, atomics, unknown keys" do
      assert {:ok, :created, %{id: 1, name: "ann"}} = Client.upsert(@user, %{id: 1, name: "ann"})
      assert {:ok, :updated, %{id: 1, name: "bea"}} = Client.upsert(@user, %{id: 1, name: "bea"})

      assert {:ok, :skipped, %{name: "bea"}} =
               Client.upsert(@user, %{id: 1, name: "cid"}, condition: {:eq, :name, "ann"})

      # by identity, keeping the existing primary key
      user!(5, %{email: "e@x", age: 10})

      assert {:ok, :updated, %{id: 5, age: 13}} =
               Client.upsert(@user, %{id: 99, email: "e@x", age: 3},
                 keys: [:email],
                 fields: [],
                 atomics: [age: {:+, {:ref, :age}, {:incoming, :age}}]
               )

      assert {:error, %Error{reason: {:unknown_upsert_keys, [:name]}}} =
               Client.upsert(@user, %{id: 1, name: "x"}, keys: [:name])
    end

    test "bulk_create answers one typed result per record" do
      user!(1)

      assert {:ok,
              [
                {:ok, %{id: 2}},
                {:error, %Error{reason: {:already_exists, %{id: 1}}}},
                {:ok, %{id: 3}}
              ]} = Client.bulk_create(@user, [%{id: 2}, %{id: 1}, %{id: 3}])

      assert {:ok, [{:ok, :updated, %{id: 1, name: "new"}}, {:ok, :created, %{id: 4}}]} =
               Client.bulk_create(@user, [%{id: 1, name: "new"}, %{id: 4, name: "four"}],
                 upsert: true,
                 fields: [:name]
               )

      assert {:ok, %{count: 4}} = Client.info(@user)
    end

    test "tenants have their own records" do
      {:ok, _} = Client.create({@user, "t1"}, %{id: 1, name: "in t1"})
      assert {:error, %Error{reason: :not_found}} = Client.get(@user, %{id: 1})
      assert {:ok, %{name: "in t1"}} = Client.get({@user, "t1"}, %{id: 1})
      assert {:ok, []} = Client.query({@user, "t2"})
      assert {:ok, 1} = Client.clear({@user, "t1"})
    end
  end

  describe "queries" do
    setup do
      for id <- 1..5, do: user!(id, %{team: rem(id, 2)})
      :ok
    end

    test "filter, sort, offset, limit, select" do
      assert {:ok, [%{id: 5}, %{id: 4}, %{id: 3}]} =
               Client.query(@user, filter: {:gt, :age, 22}, sort: [age: :desc])

      assert {:ok, [%{id: 2}, %{id: 3}]} = Client.query(@user, offset: 1, limit: 2)
      assert {:ok, [only]} = Client.query(@user, filter: {:eq, :id, 1}, select: [:name])
      assert only == %{id: 1, name: "user1"}
      assert {:ok, all} = Client.query(@user)
      assert length(all) == 5

      assert {:error, %Error{reason: {:bad_request, _}}} = Client.query(@user, sort: :nonsense)
    end

    test "aggregate, plain and grouped" do
      assert {:ok, %{n: 3, oldest: 25, ages: 72, any: true}} =
               Client.aggregate(
                 @user,
                 [{:n, :count}, {:oldest, :max, :age}, {:ages, :sum, :age}, {:any, :exists}],
                 filter: {:gt, :age, 22}
               )

      assert {:ok, [{0, %{n: 2}}, {1, %{n: 3}}]} =
               Client.aggregate(@user, [{:n, :count}], group_by: :team)

      assert {:ok, %{names: ["user1", "user2"]}} =
               Client.aggregate(@user, [{:names, :list, :name, uniq: true}],
                 sort: [id: :asc],
                 limit: 2
               )

      assert {:error, %Error{reason: {:not_a_number, :name, _}}} =
               Client.aggregate(@user, [{:s, :sum, :name}])
    end

    test "update_where and destroy_where, as records and as counts" do
      assert {:ok, [%{id: 4, team: 9}, %{id: 5, team: 9}]} =
               Client.update_where(@user,
                 filter: {:gte, :id, 4},
                 sort: [id: :asc],
                 set: %{team: 9}
               )

      assert {:ok, 2} =
               Client.update_where(@user,
                 filter: {:eq, :team, 9},
                 atomics: [age: {:*, {:ref, :age}, {:value, 2}}],
                 return: :count
               )

      assert {:ok, %{age: 50}} = Client.get(@user, %{id: 5})

      assert {:ok, [%{id: 1}]} = Client.destroy_where(@user, filter: {:eq, :id, 1})
      assert {:ok, 2} = Client.destroy_where(@user, filter: {:eq, :team, 9}, return: :count)
      assert {:ok, [%{id: 2}, %{id: 3}]} = Client.query(@user, sort: [id: :asc])
    end
  end

  describe "record processes and lifetimes" do
    test "whereis and the record_ requests to the actor's pid" do
      user!(1)
      assert {:ok, pid} = Client.whereis(@user, %{id: 1})
      assert node(pid) == rust_node()
      assert {:error, %Error{reason: :not_found}} = Client.whereis(@user, %{id: 2})

      assert {:ok, %{id: 1, name: "user1"}} = Client.record_get(pid)
      assert {:ok, %{name: "z"}} = Client.record_update(pid, %{name: "z"})

      assert {:error, %Error{reason: :stale, node: ^pid, resource: nil}} =
               Client.record_update(pid, %{name: "y"}, filter: {:eq, :name, "nope"})

      assert :ok = Client.record_keep_alive(pid)
      ref = Process.monitor(pid)
      assert :ok = Client.record_destroy(pid)
      assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 5_000

      assert {:error, %Error{reason: {:node_unavailable, :noproc}} = error} =
               Client.record_get(pid)

      assert Exception.message(error) =~ "the process is gone"
    end

    test "keep_alive as a call and as a cast" do
      user!(1)
      assert :ok = Client.keep_alive(@user, %{id: 1})
      assert {:error, %Error{reason: :not_found}} = Client.keep_alive(@user, %{id: 2})
      assert :ok = Client.cast_keep_alive(@user, %{id: 1})
      assert :ok = Client.cast_keep_alive(@user, %{id: 2})
    end

    test "subscribe: the caller gets the expiry notices, and destroys the record" do
      r = :client_test_expiring
      :ok = Client.define(r, primary_key: [:id], inactivity_timeout: 100, expiry_grace: 60_000)
      {:ok, _} = Client.clear(r)

      assert :ok = Client.subscribe([r])
      on_exit(fn -> Client.clear(r) end)
      {:ok, _} = Client.create(r, %{id: 7, what: "soon gone"})

      assert_receive {:ash_gen_server, :expired,
                      %{
                        resource: ^r,
                        primary_key: %{id: 7},
                        record: %{what: "soon gone"},
                        reason: :inactivity_timeout,
                        tenant: nil
                      }},
                     10_000

      assert :ok = Client.destroy(r, %{id: 7})
      assert :ok = Client.unsubscribe()
      assert :ok = Client.subscribe()
      assert :ok = Client.unsubscribe()
      {:ok, %{expiry_handlers: others}} = Client.stats()
      assert :ok = Client.subscribe(node: rust_node(), timeout: 5_000)
      assert {:ok, %{expiry_handlers: handlers}} = Client.stats()
      assert handlers == others + 1
      assert :ok = Client.unsubscribe(node: rust_node())
    end

    test "fault injection: the record crashes, restarts with its last state" do
      user!(1)

      assert {:error, %Error{reason: {:record_crashed, _}} = error} =
               Client.fault(@user, %{id: 1}, :panic)

      assert Exception.message(error) =~ "the record crashed"
      assert {:ok, %{name: "user1"}} = Client.get(@user, %{id: 1})
    end
  end

  describe "the node" do
    test "ping, stats, status and a raw call" do
      assert :pong = Client.ping()
      user!(1)

      assert {:ok, %{records: records, instance_id: id, uptime_ms: up}} = Client.stats()
      assert records >= 1 and is_binary(id) and up >= 0

      node = rust_node()

      assert {:ok, %{node: ^node, stats: %{instance_id: ^id}, resources: resources}} =
               Client.status()

      assert %{primary_key: [:id], count: 1} = resources[@user]

      assert {:ok, %{id: 1}} = Client.call({:get, @user, %{id: 1}})
      assert {:error, {:unknown_request, :nonsense}} = Client.call(:nonsense)
    end

    test "a node that is down, or runs no ash_gen_server, is an error, not an exit" do
      down = :"nobody_home_client@127.0.0.1"

      for result <- [
            Client.get(@user, %{id: 1}, node: down),
            Client.ping(node: down),
            Client.status(node: down),
            Client.call(:ping, node: down)
          ] do
        assert {:error, %Error{reason: {:node_unavailable, :noconnection}, node: ^down} = e} =
                 result

        assert Exception.message(e) =~ "could not connect to it"
      end

      # this VM is up but is no ash_gen_server node
      assert {:error, %Error{reason: {:node_unavailable, :noproc}} = e} =
               Client.stats(node: node())

      assert Exception.message(e) =~ "runs no `ash_gen_server`"
    end

    test "an unknown option raises" do
      assert_raise ArgumentError, fn -> Client.get(@user, %{id: 1}, nod: rust_node()) end
      assert_raise ArgumentError, fn -> Client.query(@user, filtre: true) end
    end

    test "every call is a telemetry span, with the node's raw reply" do
      {_, requests} = with_requests(fn -> Client.get(@user, %{id: 1}) end)

      assert [%{request: :get, resource: @user, reply: {:error, :not_found}}] =
               Enum.filter(requests, &(&1.message == {:get, @user, %{id: 1}}))
    end
  end

  test "a VM with no Ash at all: only Elixir, :telemetry and the client's modules" do
    peer = AshApp.PeerVM.start_without_ash!()
    on_exit(fn -> AshApp.PeerVM.stop(peer) end)
    rust = rust_node()

    value =
      AshApp.PeerVM.eval!(
        peer,
        """
        alias AshGenServer.Client
        loaded = for m <- [Ash, Spark, Splode, Ash.Resource], do: Code.ensure_loaded?(m)
        no_node = Client.ping()
        Application.put_env(:ash_gen_server, :node, rust)
        {:ok, created} = Client.create(resource, %{id: 100, name: "from a VM without Ash"})
        missing = Client.get(resource, %{id: 101})
        {:ok, found} = Client.query(resource, filter: {:eq, :id, 100})
        down = Client.get(resource, %{id: 100}, node: :"nobody_home_client@127.0.0.1")
        ash_loaded = for m <- [Ash, Spark, Splode], do: :code.is_loaded(m)
        {loaded, no_node, created, missing, found, down, ash_loaded}
        """,
        rust: rust,
        resource: @user
      )

    assert {[false, false, false, false], {:error, %Error{reason: :no_node_configured} = none},
            %{id: 100}, {:error, %Error{reason: :not_found}}, [%{name: "from a VM without Ash"}],
            {:error, %Error{reason: {:node_unavailable, :noconnection}}},
            [false, false, false]} = value

    assert Exception.message(none) =~ "config :ash_gen_server, node:"
  end
end
