defmodule Bench.Tls do
  @moduledoc """
  Workload 8: get by primary key over TLS distribution, 1 caller.

  An Erlang node runs either plain TCP or TLS distribution, never both, so `bench/run.sh`
  starts a second pair of nodes with TLS: a Rust node (`--proto-dist inet_tls`) and a baseline
  node (`-proto_dist inet_tls`), with one option file (`BENCH_TLS_OPTFILE`, certificates from
  `integration/tls_certs.sh`). The driver, which runs plain TCP, starts a TLS client node with
  `:peer` (control over stdio, so the peer needs no distribution to the driver) and runs the
  TLS sides there; the plain TCP sides run on the driver against the main nodes, in the same
  rounds, taking turns, so every ratio compares numbers taken side by side:

  - Rust over TLS against the BEAM over TLS (the target: p50 ≤ 1.0×),
  - Rust over TLS against Rust over plain TCP (what TLS costs the node), with the BEAM's own
    TLS / TCP ratio in the notes.

  The TLS nodes hold `keys` records each (`Bench.Data.person/1`), loaded from the client.
  """

  alias Bench.{Baseline, Data, Measure, Workloads}

  @resource :bench_tls_people
  @timeout 300_000

  # -- on the driver ----------------------------------------------------------------------------

  @doc "The TLS nodes from the environment `bench/run.sh` sets, or nil when there are none."
  def from_env do
    with rust when is_binary(rust) <- System.get_env("BENCH_TLS_RUST_NODE"),
         baseline when is_binary(baseline) <- System.get_env("BENCH_TLS_BASELINE_NODE"),
         optfile when is_binary(optfile) <- System.get_env("BENCH_TLS_OPTFILE") do
      %{
        rust: String.to_atom(rust),
        baseline: String.to_atom(baseline),
        optfile: optfile,
        os_pids: %{
          rust: System.get_env("BENCH_TLS_RUST_OS_PID"),
          baseline: System.get_env("BENCH_TLS_BASELINE_OS_PID")
        }
      }
    else
      _ -> nil
    end
  end

  @doc "Runs the workload; returns its rows."
  def rows(ctx) do
    tls = ctx.tls
    k = min(ctx.cfg.keys, ctx.cfg.records)
    {peer, client} = start_client(tls.optfile)
    log(ctx, "TLS client #{client}: load #{k} records on each TLS node")

    try do
      :ok =
        :peer.call(peer, __MODULE__, :setup, [tls.rust, tls.baseline, k, ctx.cfg.batch], @timeout)

      measure_rounds(ctx, peer, k)
    after
      :peer.stop(peer)
    end
  end

  defp measure_rounds(ctx, peer, k) do
    tls = ctx.tls
    rounds = ctx.cfg.rounds
    per_round = max(div(ctx.cfg.ops, rounds), 1)
    log(ctx, "get over TLS and over TCP, 1 caller, #{per_round * rounds} ops per side")

    # The plain TCP sides: the main nodes, on records workload 3 created (ids 1..records).
    keys = Enum.to_list(1..k)
    people = Workloads.people()

    beam_pids =
      ctx.baseline |> :erpc.call(Baseline, :pids, [people, keys], @timeout) |> List.to_tuple()

    tcp = %{
      rust_tcp: fn _w, _i ->
        {:ok, _} = Workloads.rust_call(ctx.rust, {:get, people, %{id: :rand.uniform(k)}})
      end,
      beam_tcp: fn _w, _i ->
        {:ok, _} = GenServer.call(elem(beam_pids, :rand.uniform(k) - 1), :get, @timeout)
      end
    }

    tcp_cpu = %{
      rust_tcp: %{driver: ctx.os_pids.driver, node: ctx.os_pids.rust},
      beam_tcp: %{driver: ctx.os_pids.driver, node: ctx.os_pids.baseline}
    }

    sides = [:beam_tcp, :beam_tls, :rust_tcp, :rust_tls]

    raws =
      for round <- 0..(rounds - 1),
          side <- Enum.drop(sides, rem(round, 4)) ++ Enum.take(sides, rem(round, 4)),
          reduce: %{} do
        acc ->
          offset = round * per_round

          raw =
            case side do
              :rust_tls ->
                :peer.call(
                  peer,
                  __MODULE__,
                  :measure,
                  [:rust, per_round, offset, tls.os_pids.rust],
                  @timeout
                )

              :beam_tls ->
                :peer.call(
                  peer,
                  __MODULE__,
                  :measure,
                  [:beam, per_round, offset, tls.os_pids.baseline],
                  @timeout
                )

              plain ->
                fun = Map.fetch!(tcp, plain)
                Measure.run_raw(max(div(per_round, 10), 1), 1, fun, 1_000_000_000 + offset)

                Measure.raw_with_cpu(tcp_cpu[plain], fn ->
                  Measure.run_raw(per_round, 1, fun, offset)
                end)
            end

          Map.update(acc, side, [raw], &[raw | &1])
      end

    s = Map.new(raws, fn {side, list} -> {side, Measure.merge(list)} end)

    [
      %{
        id: "tls_get_c1",
        table: "latency",
        workload: "8",
        label: "get by primary key over TLS, 1 caller",
        rust: s.rust_tls,
        beam: s.beam_tls,
        target: %{metric: "p50_us", op: "<=", value: 1.0, text: "p50 ≤ 1.0× BEAM over TLS"},
        counted: true,
        rust_how:
          "GenServer.call({:ash_gen_server, rust}, {:get, r, %{id: id}}) from a node with " <>
            "-proto_dist inet_tls, the Rust node with --proto-dist inet_tls",
        beam_how: "GenServer.call(record_pid, :get) (remote), both nodes -proto_dist inet_tls"
      },
      %{
        id: "tls_get_vs_tcp",
        table: "values",
        workload: "8",
        label: "get p50 over TLS / over plain TCP (Rust), 1 caller",
        unit: "µs",
        rust: s.rust_tls.p50_us,
        reference: s.rust_tcp.p50_us,
        reference_name: "Rust over TCP",
        detail: %{
          beam_tls_p50_us: s.beam_tls.p50_us,
          beam_tcp_p50_us: s.beam_tcp.p50_us,
          beam_tls_over_tcp: s.beam_tls.p50_us / max(s.beam_tcp.p50_us, 1.0e-9),
          rust_tcp: s.rust_tcp,
          beam_tcp: s.beam_tcp,
          how:
            "the same rounds as the TLS row; TCP sides from the driver to the main nodes " <>
              "(Rust: {:get, ...} on workload 3's records, BEAM: GenServer.call(record_pid, :get))"
        }
      }
    ]
  end

  defp start_client(optfile) do
    name = ~c"bench_tls_client_#{System.pid()}_#{System.unique_integer([:positive])}"

    args =
      [
        ~c"-setcookie",
        Atom.to_charlist(Node.get_cookie()),
        ~c"-proto_dist",
        ~c"inet_tls",
        ~c"-ssl_dist_optfile",
        String.to_charlist(optfile)
      ] ++ Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

    {:ok, peer, node} =
      :peer.start(%{
        name: name,
        host: ~c"127.0.0.1",
        longnames: true,
        connection: :standard_io,
        args: args
      })

    {peer, node}
  end

  defp log(ctx, message), do: if(ctx.cfg.verbose, do: IO.puts(:stderr, "  " <> message))

  # -- on the TLS client node -------------------------------------------------------------------

  @doc false
  # Connects to both TLS nodes and loads `k` records on each; kept for measure/4.
  def setup(rust, baseline, k, batch) do
    for n <- [rust, baseline] do
      unless Node.connect(n) == true and Node.ping(n) == :pong,
        do: raise("cannot reach #{n} over TLS distribution")
    end

    :ok = Workloads.rust_call(rust, {:define, @resource, %{primary_key: [:id]}})

    1..k
    |> Enum.chunk_every(batch)
    |> Enum.each(fn ids ->
      {:ok, results} =
        Workloads.rust_call(rust, {:bulk_create, @resource, Enum.map(ids, &Data.person/1), %{}})

      unless Enum.all?(results, &match?({:ok, _}, &1)), do: raise("TLS load into Rust failed")
    end)

    loaded = :erpc.call(baseline, Baseline, :load_range, [@resource, 1, k], @timeout)
    if loaded != k, do: raise("TLS baseline load: #{loaded} of #{k}")

    pids = baseline |> :erpc.call(Baseline, :pids, [@resource, Enum.to_list(1..k)], @timeout)

    :persistent_term.put({__MODULE__, :ctx}, %{rust: rust, pids: List.to_tuple(pids), k: k})
    :ok
  end

  @doc false
  # One round of `ops` gets against one TLS side, after a warm-up: a raw round for
  # Measure.merge/1, with the CPU of this client and of the node serving it.
  def measure(side, ops, offset, node_os_pid) do
    %{rust: rust, pids: pids, k: k} = :persistent_term.get({__MODULE__, :ctx})

    fun =
      case side do
        :rust ->
          fn _w, _i ->
            {:ok, _} = Workloads.rust_call(rust, {:get, @resource, %{id: :rand.uniform(k)}})
          end

        :beam ->
          fn _w, _i ->
            {:ok, _} = GenServer.call(elem(pids, :rand.uniform(k) - 1), :get, @timeout)
          end
      end

    Measure.run_raw(max(div(ops, 10), 1), 1, fun, 1_000_000_000 + offset)

    Measure.raw_with_cpu(%{driver: System.pid(), node: node_os_pid}, fn ->
      Measure.run_raw(ops, 1, fun, offset)
    end)
  end
end
