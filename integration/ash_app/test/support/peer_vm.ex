defmodule AshApp.PeerVM do
  @moduledoc """
  A second Elixir VM (an OTP `:peer`) for the tests where two applications share one Rust node.

  The peer gets this VM's code paths **except** `ash_app`'s, so it knows Ash and the bridge but
  none of this application's resources, and its own resources are compiled from source inside
  it (`compile!/2`), so this VM does not know them either. It runs the `:ash_gen_server`
  application (its own `AshGenServer.ExpiryHandler`) against the same Rust node, with this
  VM's cookie. It is stopped with the test process that started it.

  `start_without_ash!/0` starts a peer that has only Elixir, `:telemetry` and the package's
  modules (for `AshGenServer.Client` without Ash).
  """

  @doc "Starts the peer, with `:ash_gen_server` running against `rust_node`; returns its name."
  def start!(rust_node) do
    ash_app = Application.app_dir(:ash_app, "ebin") |> Path.expand()

    paths =
      :code.get_path()
      |> Enum.reject(&(Path.expand(List.to_string(&1)) == ash_app))

    peer = boot!(paths)
    false = :erpc.call(peer.node, Code, :ensure_loaded?, [AshApp.Session])

    eval_in!(
      peer.node,
      """
      Application.put_env(:logger, :level, :error)
      Application.put_env(:ash_gen_server, :node, rust_node)
      Application.put_env(:ash_gen_server, :call_timeout, 5_000)
      {:ok, _} = Application.ensure_all_started(:ash_gen_server)
      :ok
      """,
      rust_node: rust_node
    )

    peer
  end

  @doc """
  Starts a peer whose code path holds Elixir itself, `:telemetry` and `:ash_gen_server`'s
  modules and **nothing else** (no Ash, Spark, Splode...), as a project that only uses
  `AshGenServer.Client` would see them; no application of the package is started and
  `:ash_gen_server` has no configuration there.
  """
  def start_without_ash! do
    paths =
      for app <- [:elixir, :logger, :telemetry, :ash_gen_server],
          do: Path.join(:code.lib_dir(app), "ebin") |> String.to_charlist()

    peer = boot!(paths)

    for app <- [:elixir, :telemetry],
        do: {:ok, _} = :erpc.call(peer.node, :application, :ensure_all_started, [app])

    peer
  end

  defp boot!(paths) do
    name = :"ash_peer_#{System.unique_integer([:positive])}_#{System.pid()}"

    {:ok, peer, node} =
      :peer.start_link(%{
        name: name,
        host: ~c"127.0.0.1",
        longnames: true,
        args: [~c"-setcookie", Atom.to_charlist(Node.get_cookie())]
      })

    :ok = :erpc.call(node, :code, :add_pathsa, [paths])
    %{peer: peer, node: node}
  end

  @doc "Stops the peer."
  def stop(%{peer: peer}) do
    :peer.stop(peer)
  catch
    _, _ -> :ok
  end

  @doc "Compiles Elixir source (modules) inside the peer."
  def compile!(%{node: node}, source) do
    :erpc.call(node, Code, :compile_string, [source], 60_000)
  end

  @doc "Evaluates Elixir code inside the peer with `bindings`; returns its value."
  def eval!(%{node: node}, code, bindings \\ []), do: eval_in!(node, code, bindings)

  defp eval_in!(node, code, bindings) do
    {value, _bindings} = :erpc.call(node, Code, :eval_string, [code, bindings], 30_000)
    value
  end
end
