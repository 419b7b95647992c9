# The end-to-end suite runs against the real Rust node: make this VM distributed (run_ash.sh
# starts it with --name already), start the node binary under a unique name, and point
# :ash_gen_server at it. The node is stopped with SIGTERM when the suite ends, and must exit 0
# (a panic, or a hang killed after the timeout, fails the run).
AshApp.RustNode.ensure_distributed!()

# In TLS mode (run_ash_tls.sh) this VM must run TLS distribution too, or nothing connects.
if AshApp.RustNode.tls_args() != [] and
     :init.get_argument(:proto_dist) != {:ok, [[~c"inet_tls"]]} do
  raise "ASH_GEN_SERVER_SSL_DIST_OPTFILE is set but this VM does not run -proto_dist inet_tls"
end

# The node serves its Prometheus metrics on a free port (test/metrics_test.exs scrapes them).
metrics_addr = "127.0.0.1:#{AshApp.Metrics.free_port()}"
Application.put_env(:ash_app, :rust_node_args, ["--metrics-addr", metrics_addr])
Application.put_env(:ash_app, :metrics_url, "http://#{metrics_addr}/metrics")

# ASH_APP_CLUSTER=N (integration/run_ash_cluster.sh): the suite runs against a cluster of N Rust
# nodes instead, named in `config :ash_gen_server, nodes: [...]`; `node` names the first member
# (the raw calls of the tests go to it: any member serves any request).
rust_nodes =
  case System.get_env("ASH_APP_CLUSTER", "") do
    "" ->
      [AshApp.RustNode.start!()]

    count ->
      # ASH_APP_SHARDS=S: the records split into S shards (`--shards S`).
      shards =
        case System.get_env("ASH_APP_SHARDS", "") do
          "" -> []
          s -> ["--shards", s]
        end

      members =
        AshApp.RustNode.start_cluster!(
          String.to_integer(count),
          ["--shutdown-timeout", "3" | shards]
        )

      Application.put_env(:ash_gen_server, :nodes, members)
      members
  end

rust_node = hd(rust_nodes)
Application.put_env(:ash_gen_server, :node, rust_node)
System.at_exit(fn _ -> Enum.each(rust_nodes, &AshApp.RustNode.stop/1) end)

ExUnit.after_suite(fn _ ->
  # Each stopped with SIGTERM; the last members of a cluster may no longer commit their own
  # removal, and drain until the shutdown timeout: all must exit 0.
  for node <- Enum.reverse(rust_nodes) do
    case AshApp.RustNode.stop(node) do
      0 ->
        :ok

      status ->
        IO.puts(
          :stderr,
          "ash_gen_server: the Rust node #{node} exited with #{inspect(status)}, not 0"
        )

        System.halt(1)
    end
  end
end)

transport = if AshApp.RustNode.tls_args() == [], do: "TCP", else: "TLS (inet_tls)"
IO.puts("ash_gen_server: testing against #{inspect(rust_nodes)} from #{node()} over #{transport}")
ExUnit.start(timeout: 60_000)
