defmodule AshApp.SharedNodeTest do
  @moduledoc """
  Two applications (two VMs) sharing one Rust node, each with a resource the other does not
  know: each VM's expiry handler subscribes to its own resources only, so every expiry runs the
  right destroy action and its hooks, in the VM that knows the resource.
  """
  use AshApp.Case, async: false

  alias AshApp.PeerVM

  # Compiled inside the peer only: this VM cannot load it.
  @peer_resource """
  defmodule PeerApp.Ticket do
    use Ash.Resource, domain: PeerApp.Domain, data_layer: AshGenServer.DataLayer

    gen_server do
      inactivity_timeout 200
      expiry_grace 2_000
    end

    attributes do
      uuid_primary_key :id
      attribute :owner, :term, public?: true
    end

    actions do
      defaults [:read, create: :*]

      destroy :destroy do
        primary? true

        change after_action(fn changeset, record, _context ->
                 reason = get_in(changeset.context, [:ash_gen_server, :expired])
                 send(record.owner, {:ticket_destroyed, record.id, reason, node()})
                 {:ok, record}
               end)
      end
    end
  end

  defmodule PeerApp.Receipt do
    use Ash.Resource, domain: PeerApp.Domain, data_layer: AshGenServer.DataLayer

    attributes do
      uuid_primary_key :id
    end

    actions do
      defaults [:read, :destroy, create: :*]
    end
  end

  defmodule PeerApp.Domain do
    use Ash.Domain, validate_config_inclusion?: false

    resources do
      resource PeerApp.Ticket
      resource PeerApp.Receipt
    end
  end
  """

  setup do
    peer = PeerVM.start!(rust_node())
    on_exit(fn -> PeerVM.stop(peer) end)
    PeerVM.compile!(peer, @peer_resource)
    %{peer: peer}
  end

  test "each VM's expiry handler gets the expiries of its own resources", %{peer: peer} do
    ticket = Module.concat(PeerApp, "Ticket")
    refute Code.ensure_loaded?(ticket)

    # this VM: sessions; the peer: tickets, both owned by this test process
    sessions =
      for i <- 1..6 do
        Session
        |> Ash.Changeset.for_create(:create, %{owner: self(), label: "s#{i}"})
        |> Ash.create!()
      end

    ticket_ids =
      PeerVM.eval!(
        peer,
        """
        for _ <- 1..6 do
          PeerApp.Ticket
          |> Ash.Changeset.for_create(:create, %{owner: owner})
          |> Ash.create!()
          |> Map.fetch!(:id)
        end
        """,
        owner: self()
      )

    # both handlers are subscribed, each to its own resources only
    assert {:ok, %{expiry_handlers: 2}} = node_call(:stats)
    mine = AshGenServer.ExpiryHandler.subscriptions() |> Map.fetch!(rust_node())
    assert Session in mine
    refute ticket in mine

    assert %{rust_node() => [ticket]} ==
             PeerVM.eval!(peer, "AshGenServer.ExpiryHandler.subscriptions()")

    # every session's destroy action ran here, every ticket's in the peer
    peer_node = peer.node

    for %{id: id} <- sessions do
      assert_receive {:destroyed, Session, ^id, :inactivity_timeout}, 5_000
    end

    for id <- ticket_ids do
      assert_receive {:ticket_destroyed, ^id, :inactivity_timeout, ^peer_node}, 5_000
    end

    wait_until(fn -> Ash.count!(Session) == 0 end)
    assert {:ok, %{count: 0}} = node_call({:info, ticket})

    # the session hooks wrote to ExpiryLog: one entry each, none for the tickets
    assert ExpiryLog |> Ash.read!() |> Enum.map(& &1.resource) ==
             List.duplicate(Session, length(sessions))
  end

  test "a resource defined later is added to the subscription", %{peer: peer} do
    mine = AshGenServer.ExpiryHandler.subscriptions() |> Map.fetch!(rust_node())
    [ticket, receipt] = [Module.concat(PeerApp, "Ticket"), Module.concat(PeerApp, "Receipt")]

    PeerVM.eval!(peer, "Ash.read!(PeerApp.Ticket)")

    assert %{rust_node() => [ticket]} ==
             PeerVM.eval!(peer, "AshGenServer.ExpiryHandler.subscriptions()")

    PeerVM.eval!(peer, "Ash.read!(PeerApp.Receipt)")

    assert %{rust_node() => Enum.sort([ticket, receipt])} ==
             PeerVM.eval!(peer, "AshGenServer.ExpiryHandler.subscriptions()")

    # this VM's subscription did not change
    assert AshGenServer.ExpiryHandler.subscriptions() |> Map.fetch!(rust_node()) == mine
  end
end
