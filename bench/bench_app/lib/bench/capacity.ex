defmodule Bench.Capacity do
  @moduledoc """
  Workload 9, capacity: what one node can serve and what a request costs it, measured by the
  Rust load generator (`bench/loadgen.rs`, a hidden client node built on the crate's own
  distribution code) instead of this driver VM, so that the driver is not what saturates the
  two cores. The driver only starts it (`BENCH_LOADGEN_BIN`) against the Rust node and the
  baseline node, waits, and turns its JSON into rows (`table: "capacity"`).

  Rows, Rust against the BEAM baseline in one run:

  - `cap_<op>_c<N>`: closed loop, N callers over one connection: ops/s, p50/p99/p99.9 and the
    node's CPU µs per operation (`/proc/<pid>/stat` utime + stime over the run ÷ operations).
    Target at 64 callers: node CPU per operation ≤ 0.25× the BEAM node's.
  - `cap_rate_<op>`: open loop, the highest rate each side sustains with p99 ≤ 1 ms.
    Target: ≥ 3× the BEAM's.
  - `cap_max_<op>`: open loop without the latency bound, the highest rate each side keeps up
    with (every request of a 1-second step answered within 1.05 s): its sustainable
    throughput. No target; it says how the sides compare when the 1 ms bound is out of reach
    on a shared machine.
  - `cap_scale_k<n>`: closed-loop gets from 64 callers spread over n client nodes (one
    distribution connection each).
  """

  @doc "Runs the load generator and returns the rows."
  def rows(ctx) do
    bin = ctx.cfg[:loadgen_bin]
    unless bin && File.exists?(bin), do: raise("loadgen binary not found: #{inspect(bin)}")

    json =
      Path.join(System.tmp_dir!(), "bench_capacity_#{System.unique_integer([:positive])}.json")

    args =
      [
        "--cookie",
        Atom.to_string(Node.get_cookie()),
        "--rust",
        Atom.to_string(ctx.rust),
        "--beam",
        Atom.to_string(ctx.baseline),
        "--json",
        json
      ] ++
        pid_args("--rust-pid", ctx.os_pids.rust) ++
        pid_args("--beam-pid", ctx.os_pids.baseline) ++
        if(ctx.cfg.mode =~ "smoke", do: ["--smoke"], else: []) ++
        Enum.flat_map(ctx.cfg[:capacity_args] || [], & &1)

    try do
      case System.cmd(bin, args, stderr_to_stdout: true) do
        {_out, 0} -> :ok
        {out, status} -> raise "loadgen exited #{status}: #{String.slice(out, -2000, 2000)}"
      end

      json |> File.read!() |> Jason.decode!() |> to_rows()
    after
      File.rm(json)
    end
  end

  defp pid_args(_flag, nil), do: []
  defp pid_args(flag, pid), do: [flag, to_string(pid)]

  @doc "The ids of the rows a run produces with the load generator's defaults."
  def expected_ids do
    closed = for op <- ["get", "update"], c <- [1, 8, 64, 256], do: "cap_#{op}_c#{c}"

    closed ++
      ["cap_rate_get", "cap_rate_update", "cap_max_get", "cap_max_update"] ++
      for(k <- [1, 2, 4], do: "cap_scale_k#{k}")
  end

  defp to_rows(%{"rows" => raw}) do
    raw
    |> Enum.group_by(&{&1["section"], &1["op"], &1["callers"], &1["clients"]})
    |> Enum.map(fn {{section, op, callers, clients}, sides} ->
      side = fn name -> Enum.find(sides, &(&1["side"] == name)) end
      row(section, op, callers, clients, side.("rust"), side.("beam"))
    end)
    |> Enum.sort_by(&order/1)
  end

  defp order(row), do: {row.section_order, row.op, row.clients, row.callers}

  defp stats(nil), do: nil

  defp stats(side) do
    s = side["stats"]

    %{
      ops_s: s["ops_s"],
      p50_us: s["p50_us"],
      p99_us: s["p99_us"],
      p999_us: s["p999_us"],
      node_cpu_us: s["node_cpu_us"],
      gen_cpu_us: s["gen_cpu_us"],
      ops: s["ops"],
      rate: side["rate"]
    }
  end

  defp row("closed", op, callers, _clients, rust, beam) do
    target =
      if callers == 64,
        do: %{metric: "node_cpu_us", op: "<=", value: 0.25, text: "node CPU/op ≤ 0.25× BEAM"}

    base(0, "cap_#{op}_c#{callers}", "#{op}, #{callers} caller#{plural(callers)}", op, callers, 1)
    |> Map.merge(%{metric: "node_cpu_us", target: target, counted: target != nil})
    |> put_sides(rust, beam)
  end

  defp row("rate", op, callers, _clients, rust, beam) do
    base(
      1,
      "cap_rate_#{op}",
      "#{op}, rate at p99 ≤ 1 ms, open loop, #{callers} callers",
      op,
      callers,
      1
    )
    |> Map.merge(%{
      metric: "rate",
      target: %{metric: "rate", op: ">=", value: 3.0, text: "rate ≥ 3× BEAM"},
      counted: true
    })
    |> put_sides(rust, beam)
  end

  defp row("max_rate", op, callers, _clients, rust, beam) do
    base(
      2,
      "cap_max_#{op}",
      "#{op}, highest rate kept up with (any latency), open loop, #{callers} callers",
      op,
      callers,
      1
    )
    |> Map.merge(%{metric: "rate", target: nil, counted: false})
    |> put_sides(rust, beam)
  end

  defp row("scale", op, callers, clients, rust, beam) do
    base(
      3,
      "cap_scale_k#{clients}",
      "#{op}, #{callers} callers over #{clients} client node#{plural(clients)}",
      op,
      callers,
      clients
    )
    |> Map.merge(%{metric: "ops_s", target: nil, counted: false})
    |> put_sides(rust, beam)
  end

  defp base(section_order, id, label, op, callers, clients) do
    %{
      id: id,
      table: "capacity",
      workload: "9",
      label: label,
      op: op,
      callers: callers,
      clients: clients,
      section_order: section_order
    }
  end

  defp put_sides(row, rust, beam), do: Map.merge(row, %{rust: stats(rust), beam: stats(beam)})

  defp plural(1), do: ""
  defp plural(_), do: "s"

  @doc "Ratio Rust / BEAM of the row's metric."
  def ratio(%{rust: r, beam: b, metric: m}) when is_map(r) and is_map(b) do
    key = String.to_existing_atom(m)

    case {r[key], b[key]} do
      {x, y} when is_number(x) and is_number(y) and y != 0 -> x / y
      _ -> nil
    end
  end

  def ratio(_), do: nil

  # -- Markdown ---------------------------------------------------------------------------------

  @doc "The capacity section of the report (empty when there are no capacity rows)."
  def markdown([]), do: ""

  def markdown(rows) do
    {closed, rest} = Enum.split_with(rows, &String.match?(&1.id, ~r/^cap_(get|update)_c/))
    {rate, scale} = Enum.split_with(rest, &String.match?(&1.id, ~r/^cap_(rate|max)_/))
    f = &Bench.Report.fmt_us/1
    o = &Bench.Report.fmt_ops/1
    r = &Bench.Report.fmt_ratio/1

    cpu = fn side ->
      if side && is_number(side.node_cpu_us), do: "#{fmt2(side.node_cpu_us)} µs", else: "—"
    end

    gen = fn side ->
      if side && is_number(side.gen_cpu_us), do: fmt2(side.gen_cpu_us), else: "—"
    end

    res = &result_text/1

    closed_lines =
      Enum.map_join(closed, "\n", fn row ->
        "| #{row.label} | #{o.(row.rust.ops_s)} | #{o.(row.beam.ops_s)} | #{f.(row.rust.p50_us)} / #{f.(row.rust.p99_us)} / #{f.(row.rust.p999_us)} | " <>
          "#{f.(row.beam.p50_us)} / #{f.(row.beam.p99_us)} / #{f.(row.beam.p999_us)} | #{cpu.(row.rust)} | #{cpu.(row.beam)} | " <>
          "#{r.(row.ratio)} | #{gen.(row.rust)} / #{gen.(row.beam)} | #{target_text(row)} | #{res.(row)} |"
      end)

    rate_lines =
      Enum.map_join(rate, "\n", fn row ->
        "| #{row.label} | #{o.(row.rust.rate)} | #{o.(row.beam.rate)} | #{r.(row.ratio)} | " <>
          "#{f.(row.rust.p99_us)} | #{f.(row.beam.p99_us)} | #{cpu.(row.rust)} | #{cpu.(row.beam)} | #{target_text(row)} | #{res.(row)} |"
      end)

    scale_lines =
      Enum.map_join(scale, "\n", fn row ->
        "| #{row.label} | #{o.(row.rust.ops_s)} | #{o.(row.beam.ops_s)} | #{r.(row.ratio)} | " <>
          "#{f.(row.rust.p99_us)} | #{f.(row.beam.p99_us)} | #{cpu.(row.rust)} | #{cpu.(row.beam)} |"
      end)

    """
    ## Capacity (workload 9, Rust load generator)

    Driven by `bench/loadgen.rs`, a hidden client node in Rust built on the crate's own
    distribution code, instead of this driver VM; the sides are the same Rust node and baseline
    node as above, on a resource of their own. "Node CPU" is the node's `utime + stime`
    (`/proc/<pid>/stat`) over the runs ÷ operations; "loadgen CPU" is the load generator's own,
    Rust / BEAM side, in µs per operation. Closed loop over one connection, latencies p50 / p99 /
    p99.9:

    | Row | Rust ops/s | BEAM ops/s | Rust latency | BEAM latency | Rust node CPU/op | BEAM node CPU/op | CPU × | loadgen CPU/op | Target | Result |
    |---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|
    #{closed_lines}

    Open loop: requests released at a fixed rate (every 200 µs, those due) and taken by
    at most 64 callers, latency counted from the release; the rate is raised ×1.25 until p99
    exceeds 1 ms (one retry), then bisected twice. The row is the highest rate that held. The
    "highest rate kept up with" rows sweep again from there without the latency bound: the
    highest rate whose 1-second steps are all answered within 1.05 s (each side's sustainable
    throughput; p99 is whatever it was at that rate):

    | Row | Rust ops/s | BEAM ops/s | rate × | Rust p99 | BEAM p99 | Rust node CPU/op | BEAM node CPU/op | Target | Result |
    |---|--:|--:|--:|--:|--:|--:|--:|---|---|
    #{rate_lines}

    Scaling: closed-loop gets with the callers spread over 1, 2 and 4 client nodes, each its own
    distribution connection (the node serves each connection on its own task, on either core):

    | Row | Rust ops/s | BEAM ops/s | ops/s × | Rust p99 | BEAM p99 | Rust node CPU/op | BEAM node CPU/op |
    |---|--:|--:|--:|--:|--:|--:|--:|
    #{scale_lines}
    """
  end

  defp target_text(%{target: %{text: text}}), do: text
  defp target_text(_), do: "—"

  defp result_text(%{result: nil}), do: "—"
  defp result_text(%{result: result}), do: "**#{result}**"

  defp fmt2(v), do: :erlang.float_to_binary(v / 1, decimals: 2)
end
