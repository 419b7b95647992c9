defmodule Bench.Report do
  @moduledoc """
  Turns result rows into the results document: ratios Rust / BEAM, PASS/FAIL against the
  targets, a Markdown report (tables), JSON, and the check that every row is there
  (`check/1`, used by `bench/run.sh --smoke`).
  """

  import Bitwise
  import Bench.Workloads, only: [fmt_int: 1]

  # -- ratios and targets ----------------------------------------------------------------------

  @doc "Adds `ratio` and `result` to every row."
  def evaluate(rows), do: Enum.map(rows, &evaluate_row/1)

  defp evaluate_row(%{table: "latency", rust: rust, beam: beam} = row) do
    ratio = %{
      ops_s: ratio(rust.ops_s, beam.ops_s),
      p50_us: ratio(rust.p50_us, beam.p50_us),
      p99_us: ratio(rust.p99_us, beam.p99_us)
    }

    row = Map.put(row, :ratio, ratio)

    case row[:target] do
      %{metric: metric} = target ->
        value = Map.fetch!(ratio, String.to_existing_atom(metric))
        Map.put(row, :result, judge(value, target))

      _ ->
        Map.put(row, :result, nil)
    end
  end

  defp evaluate_row(%{table: "capacity"} = row) do
    ratio = Bench.Capacity.ratio(row)
    row = Map.put(row, :ratio, ratio)

    case row[:target] do
      %{} = target -> Map.put(row, :result, judge(ratio, target))
      _ -> Map.put(row, :result, nil)
    end
  end

  defp evaluate_row(%{table: "values"} = row) do
    ratio = ratio(row.rust, row[:reference])
    row = Map.put(row, :ratio, ratio)

    case row[:target] do
      %{} = target -> Map.put(row, :result, judge(ratio, target))
      _ -> Map.put(row, :result, nil)
    end
  end

  defp ratio(a, b) when is_number(a) and is_number(b) and b != 0, do: a / b
  defp ratio(_, _), do: nil

  defp judge(nil, _target), do: "FAIL"
  defp judge(value, %{op: "<=", value: limit}), do: if(value <= limit, do: "PASS", else: "FAIL")
  defp judge(value, %{op: ">=", value: limit}), do: if(value >= limit, do: "PASS", else: "FAIL")

  @doc "The rows whose target counts (PASS/FAIL), in order."
  def targets(rows), do: Enum.filter(rows, &(&1[:result] && &1[:counted]))

  # -- the rows every run must have -------------------------------------------------------------

  @doc "Ids of the rows a run with this configuration produces."
  def expected_ids(cfg) do
    callers = cfg["callers"] || cfg[:callers]

    get_update =
      for name <- ["get", "update"], c <- callers, suffix <- ["", "_pid"] do
        "#{name}#{suffix}_c#{c}"
      end

    big =
      if cfg["run_big"] || cfg[:run_big],
        do: ["big_create", "big_create_whole", "big_memory"],
        else: []

    tls = if cfg["tls"] || cfg[:tls], do: ["tls_get_c1", "tls_get_vs_tcp"], else: []
    capacity = if cfg["capacity"] || cfg[:capacity], do: Bench.Capacity.expected_ids(), else: []

    ["create", "create_total", "memory"] ++
      get_update ++
      ["filter_small", "filter_large"] ++
      ["ash_create", "ash_get", "ash_update", "ash_filter_small", "ash_filter_large"] ++
      ["ash_counter_c64", "ash_datetime_page"] ++ big ++ tls ++ capacity
  end

  @doc """
  Checks a results JSON file (and the Markdown beside it): every expected row present, with
  numbers on both sides, and its label in the Markdown table. Returns `:ok` or `{:error, msg}`.
  Says nothing about speed.
  """
  def check(json_path) do
    md_path = Path.rootname(json_path) <> ".md"
    svg_path = Path.rootname(json_path) <> ".svg"

    with {:ok, json} <- File.read(json_path),
         {:ok, doc} <- Jason.decode(json),
         {:ok, md} <- File.read(md_path),
         true <- File.exists?(svg_path) || {:error, "#{svg_path} is missing"} do
      rows = Map.new(doc["rows"], &{&1["id"], &1})

      problems =
        for id <- expected_ids(doc["config"]),
            problem = row_problem(id, rows[id], md),
            do: problem

      problems =
        if is_number(get_in(doc, ["loopback", "p50_us"])),
          do: problems,
          else: ["the loopback floor is missing" | problems]

      case problems do
        [] -> :ok
        _ -> {:error, Enum.join(problems, "\n")}
      end
    else
      {:error, %Jason.DecodeError{} = e} -> {:error, Exception.message(e)}
      {:error, reason} when is_atom(reason) -> {:error, "cannot read: #{reason}"}
      {:error, message} -> {:error, message}
    end
  end

  @doc "`check/1` for the command line: prints the verdict, halts non-zero on a problem."
  def check_main([json_path]) do
    case check(json_path) do
      :ok ->
        IO.puts("bench check: every row present in #{Path.rootname(json_path)}.md")
        IO.puts("1 passed, 0 failed")

      {:error, message} ->
        IO.puts(:stderr, "bench check: #{message}")
        IO.puts("0 passed, 1 failed")
        System.halt(1)
    end
  end

  @doc """
  A Markdown table of the target rows' ratios across several results JSON files (to see how
  much runs vary): `mix run --no-start -e 'Bench.Report.compare_main(System.argv())' -- a.json b.json`.
  """
  def compare_main(paths) do
    docs = Enum.map(paths, &(&1 |> File.read!() |> Jason.decode!()))

    ids =
      docs
      |> Enum.flat_map(& &1["rows"])
      |> Enum.filter(&(&1["target"] && &1["counted"]))
      |> Enum.uniq_by(& &1["id"])

    header = "| Row | target | " <> Enum.map_join(docs, " | ", & &1["timestamp"]) <> " |"
    rule = "|---|---|" <> String.duplicate("--:|", length(docs))

    lines =
      for row <- ids do
        cells =
          for doc <- docs do
            case Enum.find(doc["rows"], &(&1["id"] == row["id"])) do
              nil -> "—"
              r -> "#{fmt_ratio(target_value(r))} #{r["result"]}"
            end
          end

        table_row([row["label"], row["target"]["text"] | cells])
      end

    IO.puts(Enum.join([header, rule | lines], "\n"))
  end

  defp target_value(%{"table" => "latency", "ratio" => ratio, "target" => %{"metric" => m}}),
    do: ratio[m]

  defp target_value(%{"ratio" => ratio}), do: ratio

  defp row_problem(id, nil, _md), do: "row #{id} is missing"

  defp row_problem(id, row, md) do
    numbers? =
      case row["table"] do
        "latency" ->
          Enum.all?(["rust", "beam"], fn side ->
            Enum.all?(["ops_s", "p50_us", "p99_us"], &is_number(get_in(row, [side, &1])))
          end)

        "values" ->
          is_number(row["rust"]) and (row["reference_name"] == nil or is_number(row["reference"]))

        "capacity" ->
          Enum.all?(["rust", "beam"], fn side ->
            is_number(get_in(row, [side, "ops_s"])) and
              is_number(get_in(row, [side, "node_cpu_us"])) and
              (row["metric"] != "rate" or is_number(get_in(row, [side, "rate"])))
          end)
      end

    cond do
      not numbers? -> "row #{id} lacks numbers"
      not String.contains?(md, "| #{row["label"]} |") -> "row #{id} is not in the table"
      row["target"] && row["result"] not in ["PASS", "FAIL"] -> "row #{id} has no PASS/FAIL"
      true -> nil
    end
  end

  # -- Markdown ---------------------------------------------------------------------------------

  def markdown(doc) do
    rows = doc.rows
    latency = Enum.filter(rows, &(&1.table == "latency"))
    values = Enum.filter(rows, &(&1.table == "values"))
    targets = targets(rows)
    passed = Enum.count(targets, &(&1.result == "PASS"))
    lb = doc.loopback

    """
    # ash_gen_server benchmark: Rust node vs BEAM baseline

    #{doc.mode_text}. Run #{doc.timestamp}. Targets met: **#{passed} of #{length(targets)}**.

    #{machine_text(doc.machine)}

    **Physical floor**: a TCP round trip of a #{lb["frame_bytes"]}-byte frame over 127.0.0.1
    (`examples/loopback_rtt.rs`, #{fmt_int(lb["iters"] || 0)} rounds), p50 / p99:

    | loopback round trip | before the workloads | after them |
    |---|--:|--:|
    #{loopback_lines(lb, doc.loopback_end)}

    Every call below crosses loopback once each way, between processes that the kernel places on
    either CPU. 1-minute load average #{doc.load_average.start} at the start,
    #{doc.load_average.end} at the end (on a shared machine, other work inflates every number).

    ## Latency and throughput

    "BEAM" is the baseline node (one GenServer per record, Registry keyed by `{resource, pk}`,
    DynamicSupervisor) for workloads 1–4, and `Bench.InProcessDataLayer` (the same design on the
    Ash node itself) for workload 5. In workload 7 both sides are the Rust node through Ash:
    "Rust" is the feature done in the node, "BEAM" the shim's fallback for it (the compare-and-set
    loop; every record fetched and Ash filtering, sorting and paging them). Workload 8 runs over
    TLS distribution on both sides (a second Rust node and baseline node with `inet_tls`, called
    from a client node with `inet_tls`). Ratios are Rust / BEAM:
    below 1 is better for latency, above 1 is better for ops/s. Closed loop: each caller sends
    its next request when the reply is in. Each side runs in #{doc.config.rounds} rounds, the sides taking turns: ops/s is the median
    round's, p50 and p99 are over every operation of every round.

    | # | Row | Rust ops/s | BEAM ops/s | ops/s × | Rust p50 | BEAM p50 | p50 × | Rust p99 | BEAM p99 | p99 × | Target | Result |
    |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|
    #{Enum.map_join(latency, "\n", &latency_line/1)}

    ## Creation and memory

    | # | Row | Rust | Reference | Rust / reference | Target | Result |
    |---|---|--:|--:|--:|---|---|
    #{Enum.map_join(values, "\n", &values_line/1)}
    #{values_notes(values)}
    #{Bench.Capacity.markdown(Enum.filter(rows, &(&1.table == "capacity")))}
    ## Targets

    #{Enum.map_join(targets, "\n", &target_line/1)}

    Rows marked "(extra)" are not counted; their PASS/FAIL is against the same target for
    information.

    ## Where the time goes

    CPU seconds used by the driver VM and by the node serving the row during each measured run
    (`/proc/<pid>/stat`), against the run's wall time. The machine has #{doc.machine[:nproc]}
    cores shared by the driver, the node under test and the idle other node; a side whose
    driver CPU is close to its wall time × cores is bound by the driver, not the node.

    | Row | Rust: wall s | driver CPU s | node CPU s | BEAM: wall s | driver CPU s | node CPU s |
    |---|--:|--:|--:|--:|--:|--:|
    #{Enum.map_join(latency, "\n", &cpu_line/1)}

    ## How each side is called

    #{Enum.map_join(Enum.uniq_by(Enum.filter(latency, & &1[:rust_how]), &(&1.workload <> &1.rust_how)), "\n", &how_line/1)}

    ## Configuration

    ```
    #{Jason.encode!(doc.config, pretty: true)}
    ```
    """
  end

  defp loopback_lines(start, finish) do
    for {key, name} <- [
          {nil, "threads placed by the kernel"},
          {"same_cpu", "both ends on one CPU"},
          {"cross_cpu", "ends on two CPUs"}
        ] do
      pick = fn doc -> if key, do: (doc || %{})[key] || %{}, else: doc || %{} end
      cell = fn doc -> "#{fmt_us(pick.(doc)["p50_us"])} / #{fmt_us(pick.(doc)["p99_us"])}" end
      "| #{name} | #{cell.(start)} | #{cell.(finish)} |"
    end
    |> Enum.join("\n")
  end

  defp machine_text(m) do
    "**Machine**: #{m[:nproc]} cores (`nproc`), #{m[:cpu_model]}, #{fmt_bytes(m[:ram_bytes])} RAM; " <>
      "#{m[:os]} (Linux #{m[:kernel]}); Erlang/OTP #{m[:otp]} (ERTS #{m[:erts]}), " <>
      "Elixir #{m[:elixir]}, #{m[:rustc]}; Ash #{m[:ash]}. Date #{m[:date]}."
  end

  defp latency_line(row) do
    r = row.rust
    b = row.beam

    cells = [
      row.workload,
      row.label,
      fmt_ops(r.ops_s),
      fmt_ops(b.ops_s),
      fmt_ratio(row.ratio.ops_s),
      fmt_us(r.p50_us),
      fmt_us(b.p50_us),
      fmt_ratio(row.ratio.p50_us),
      fmt_us(r.p99_us),
      fmt_us(b.p99_us),
      fmt_ratio(row.ratio.p99_us),
      target_text(row),
      result_text(row)
    ]

    table_row(cells)
  end

  defp values_line(row) do
    reference =
      case row[:reference] do
        nil -> "—"
        value -> "#{fmt_value(value, row.unit)} (#{row.reference_name})"
      end

    extra =
      case row do
        %{id: "big_memory", detail: d} ->
          share =
            if d.rss_share_of_ram, do: ", #{Float.round(d.rss_share_of_ram * 100, 1)} % of RAM"

          " (RSS #{fmt_bytes(d.rss_after)} in all#{share})"

        _ ->
          ""
      end

    cells = [
      row.workload,
      row.label,
      fmt_value(row.rust, row.unit) <> extra,
      reference,
      fmt_ratio(row.ratio),
      target_text(row),
      result_text(row)
    ]

    table_row(cells)
  end

  defp values_notes(values) do
    notes =
      for row <- values do
        case row do
          %{id: "memory", detail: d} ->
            "- Memory (workload 3): Rust RSS #{fmt_bytes(d.rust_rss_before)} → " <>
              "#{fmt_bytes(d.rust_rss_after)}; BEAM `:erlang.memory(:total)` " <>
              "#{fmt_bytes(d.beam_memory_total_before)} → #{fmt_bytes(d.beam_memory_total_after)}."

          %{id: "tls_get_vs_tcp", detail: d} ->
            "- Workload 8, in the same rounds: the BEAM's get p50 over TLS " <>
              "#{fmt_us(d.beam_tls_p50_us)} against #{fmt_us(d.beam_tcp_p50_us)} over TCP " <>
              "(#{fmt_ratio(d.beam_tls_over_tcp)}); Rust over TCP p99 " <>
              "#{fmt_us(d.rust_tcp.p99_us)}."

          %{id: "big_create", detail: d} ->
            tenths = Enum.map_join(d.big_tenths_us_per_record, ", ", &fmt_num/1)
            small = Enum.map_join(d.small_runs_us_per_record, ", ", &fmt_num/1)
            cs = d.cpu_us_per_record_small
            cb = d.cpu_us_per_record_big

            "- Workload 6, µs per record for each tenth of the big load: #{tenths} " <>
              "(the small runs: #{small}). CPU µs per record, driver / node: " <>
              "#{fmt_num(cs[:driver])} / #{fmt_num(cs[:node])} at the small size, " <>
              "#{fmt_num(cb[:driver])} / #{fmt_num(cb[:node])} at the big one."

          _ ->
            nil
        end
      end

    case Enum.reject(notes, &is_nil/1) do
      [] -> ""
      notes -> "\n" <> Enum.join(notes, "\n") <> "\n"
    end
  end

  defp fmt_num(nil), do: "?"
  defp fmt_num(v), do: :erlang.float_to_binary(v / 1, decimals: 2)

  defp result_text(%{result: nil}), do: "—"
  defp result_text(%{result: result, counted: false}), do: "(#{String.downcase(result)})"
  defp result_text(%{result: "PASS"}), do: "**PASS**"
  defp result_text(%{result: "FAIL"}), do: "**FAIL**"

  defp target_line(row) do
    value =
      case row.table do
        "latency" -> Map.fetch!(row.ratio, String.to_existing_atom(row.target.metric))
        _ -> row.ratio
      end

    numbers =
      case row do
        %{table: "capacity", metric: "rate"} ->
          "#{fmt_ops(row.rust.rate)} vs #{fmt_ops(row.beam.rate)} ops/s"

        %{table: "capacity"} ->
          "#{fmt_num(row.rust.node_cpu_us)} vs #{fmt_num(row.beam.node_cpu_us)} µs of node CPU per operation"

        %{table: "latency", target: %{metric: "ops_s"}} ->
          "#{fmt_ops(row.rust.ops_s)} vs #{fmt_ops(row.beam.ops_s)} ops/s"

        %{table: "latency"} ->
          "p50 #{fmt_us(row.rust.p50_us)} vs #{fmt_us(row.beam.p50_us)}"

        %{table: "values"} ->
          "#{fmt_value(row.rust, row.unit)} vs #{fmt_value(row.reference, row.unit)}"
      end

    "- **#{row.result}** — #{row.label}: #{fmt_ratio(value)} (target #{row.target.text}; #{numbers})"
  end

  defp cpu_line(row) do
    side = fn stats ->
      cpu = stats[:cpu] || %{}
      [fmt_s(stats.wall_s), fmt_s(cpu[:driver]), fmt_s(cpu[:node])]
    end

    table_row([row.label | side.(row.rust) ++ side.(row.beam)])
  end

  defp table_row(cells), do: "| " <> Enum.join(cells, " | ") <> " |"

  defp target_text(row), do: (row[:target] && row.target.text) || "—"

  defp how_line(row),
    do: "- #{row.workload}. #{row.label}: Rust `#{row.rust_how}`; BEAM `#{row.beam_how}`"

  # -- formatting ---------------------------------------------------------------------------------

  def fmt_us(nil), do: "—"
  def fmt_us(us) when us < 1_000, do: "#{:erlang.float_to_binary(us / 1, decimals: 1)} µs"
  def fmt_us(us) when us < 1_000_000, do: "#{:erlang.float_to_binary(us / 1000, decimals: 2)} ms"
  def fmt_us(us), do: "#{:erlang.float_to_binary(us / 1.0e6, decimals: 2)} s"

  def fmt_ops(nil), do: "—"
  def fmt_ops(ops) when ops >= 100, do: fmt_int(round(ops))
  def fmt_ops(ops), do: :erlang.float_to_binary(ops / 1, decimals: 2)

  def fmt_ratio(nil), do: "—"
  def fmt_ratio(r) when r >= 10, do: "#{:erlang.float_to_binary(r / 1, decimals: 1)}×"
  def fmt_ratio(r) when r >= 0.1, do: "#{:erlang.float_to_binary(r / 1, decimals: 2)}×"
  def fmt_ratio(r) when r >= 0.01, do: "#{:erlang.float_to_binary(r / 1, decimals: 3)}×"
  def fmt_ratio(r), do: "#{:erlang.float_to_binary(r / 1, decimals: 4)}×"

  defp fmt_s(nil), do: "—"
  defp fmt_s(s), do: :erlang.float_to_binary(s / 1, decimals: 2)

  def fmt_value(nil, _), do: "—"
  def fmt_value(v, "B"), do: "#{fmt_int(round(v))} B"
  def fmt_value(v, "s"), do: "#{:erlang.float_to_binary(v / 1, decimals: 2)} s"
  def fmt_value(v, "µs"), do: "#{:erlang.float_to_binary(v / 1, decimals: 2)} µs"

  def fmt_bytes(nil), do: "?"
  def fmt_bytes(b) when b >= 1 <<< 30, do: "#{Float.round(b / (1 <<< 30), 1)} GiB"
  def fmt_bytes(b), do: "#{Float.round(b / (1 <<< 20), 1)} MiB"
end
