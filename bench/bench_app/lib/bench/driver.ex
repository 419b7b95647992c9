defmodule Bench.Driver do
  @moduledoc """
  The driver node: runs every workload against the Rust node and the BEAM baseline, then writes
  `results-<timestamp>.md`, `.json` and `.svg` and prints the Markdown. Started by
  `bench/run.sh`, which also starts the nodes and passes their names in the environment:

  - `BENCH_RUST_NODE`, `BENCH_BIG_NODE` (a fresh Rust node for workload 6), `BENCH_BASELINE_NODE`
  - `BENCH_RUST_OS_PID`, `BENCH_BIG_OS_PID`, `BENCH_BASELINE_OS_PID` (CPU accounting; optional)
  - `BENCH_TLS_RUST_NODE`, `BENCH_TLS_BASELINE_NODE`, `BENCH_TLS_OPTFILE` and their
    `BENCH_TLS_*_OS_PID`: the pair of nodes running TLS distribution, for workload 8
    (`Bench.Tls`); without them workload 8 is left out
  - `BENCH_LOADGEN_BIN` (the `loadgen` example: workload 9, `Bench.Capacity`; without it
    workload 9 is left out)
  - `BENCH_LOOPBACK_BIN` (the `loopback_rtt` example), `BENCH_OUT` (output folder),
    `BENCH_TIMESTAMP`

  Flags (after `--`): see `@usage`. Exits 0 when every workload ran (whatever the numbers),
  1 when one failed (the others still run and the report says which).
  """

  alias Bench.{Chart, Report, Workloads}

  @usage """
  bench/run.sh [--smoke] [options]
    --smoke                 tiny sizes, every workload, checks the report has every row
    --records N             records created in workload 3, the large filter sets, the
                            events of workload 7 (100000)
    --small N               the small filter set (10000)
    --ops N                 operations per side per get/update measurement (30000)
    --callers LIST          concurrent callers for get/update (1,8,64)
    --keys N                distinct records get/update pick from (10000)
    --create-callers N      concurrent callers for workload 3's creates (8)
    --ash-ops N             operations per side per Ash action, increments per side of
                            workload 7's counter (2000)
    --big N                 records of workload 6 (1000000); --no-big skips workload 6
    --big-small N           workload 6's reference size (10000)
    --batch N               records per bulk_create batch (1000)
    --scan-iters-small N    BEAM scans timed over the small set (10)
    --scan-iters-large N    BEAM scans timed over the large set (3)
    --only LIST             run only these workloads, e.g. 7 or 5,7 (1 and 2 run together,
                            with 3, which creates their records; all by default); with --smoke
                            the row check then fails
    --rounds N              get/update/Ash measurements are split in N rounds, the sides
                            taking turns (5); ops/s is the median round's
    --loopback-iters N      loopback_rtt rounds (20000)
    --quiet                 no progress lines on stderr
  """

  @full %{
    records: 100_000,
    small: 10_000,
    ops: 30_000,
    callers: [1, 8, 64],
    keys: 10_000,
    create_callers: 8,
    ash_ops: 2_000,
    big: 1_000_000,
    big_small: 10_000,
    run_big: true,
    batch: 1_000,
    scan_iters_small: 10,
    scan_iters_large: 3,
    loopback_iters: 20_000,
    rounds: 5,
    verbose: true
  }

  @smoke %{
    @full
    | records: 400,
      small: 200,
      ops: 320,
      keys: 400,
      ash_ops: 50,
      big: 4_000,
      big_small: 1_000,
      batch: 200,
      scan_iters_small: 2,
      scan_iters_large: 2,
      loopback_iters: 1_000,
      rounds: 2
  }

  @switches [
    smoke: :boolean,
    records: :integer,
    small: :integer,
    ops: :integer,
    callers: :string,
    keys: :integer,
    create_callers: :integer,
    ash_ops: :integer,
    big: :integer,
    big_small: :integer,
    no_big: :boolean,
    only: :string,
    batch: :integer,
    scan_iters_small: :integer,
    scan_iters_large: :integer,
    loopback_iters: :integer,
    rounds: :integer,
    quiet: :boolean,
    help: :boolean
  ]

  def main(argv) do
    code =
      try do
        run(argv)
      rescue
        e ->
          IO.puts(:stderr, "bench driver: " <> Exception.format(:error, e, __STACKTRACE__))
          2
      end

    System.halt(code)
  end

  def run(argv) do
    {opts, rest, invalid} = OptionParser.parse(argv, strict: @switches)

    cond do
      opts[:help] ->
        IO.puts(@usage)
        0

      rest != [] or invalid != [] ->
        IO.puts(:stderr, "bench: unknown arguments #{inspect(rest ++ invalid)}\n" <> @usage)
        2

      true ->
        bench(config(opts))
    end
  end

  defp config(opts) do
    base = if opts[:smoke], do: @smoke, else: @full

    cfg =
      Enum.reduce(opts, base, fn
        {:smoke, _}, acc -> acc
        {:help, _}, acc -> acc
        {:no_big, true}, acc -> %{acc | run_big: false}
        {:no_big, false}, acc -> acc
        {:quiet, q}, acc -> %{acc | verbose: not q}
        {:callers, list}, acc -> %{acc | callers: parse_list(list)}
        {:only, list}, acc -> Map.put(acc, :only, parse_list(list))
        {key, value}, acc -> Map.put(acc, key, max(value, 1))
      end)

    # Every create caller makes the same number of records.
    records = max(div(cfg.records, cfg.create_callers), 1) * cfg.create_callers
    custom? = Keyword.drop(opts, [:smoke, :quiet]) != []

    mode =
      cond do
        opts[:smoke] == true and not custom? -> "smoke"
        opts[:smoke] -> "smoke (custom sizes)"
        custom? -> "custom"
        true -> "full"
      end

    cfg
    |> Map.put(:records, records)
    |> Map.put(:mode, mode)
    |> Map.put(:tls, Bench.Tls.from_env() != nil)
    |> Map.put(:loopback_bin, System.get_env("BENCH_LOOPBACK_BIN"))
    |> Map.put(:loadgen_bin, System.get_env("BENCH_LOADGEN_BIN"))
    |> Map.put(:capacity, System.get_env("BENCH_LOADGEN_BIN") != nil)
  end

  defp parse_list(text),
    do: text |> String.split(",", trim: true) |> Enum.map(&String.to_integer(String.trim(&1)))

  defp env!(name) do
    case System.get_env(name) do
      nil -> raise "#{name} is not set (run bench/run.sh)"
      value -> value
    end
  end

  defp connect!(name) do
    node = String.to_atom(name)

    unless Node.connect(node) == true and Node.ping(node) == :pong,
      do: raise("cannot reach node #{node}")

    node
  end

  defp bench(cfg) do
    rust = connect!(env!("BENCH_RUST_NODE"))
    baseline = connect!(env!("BENCH_BASELINE_NODE"))
    big = if cfg.run_big, do: connect!(env!("BENCH_BIG_NODE"))
    Application.put_env(:ash_gen_server, :node, rust)

    ctx = %{
      rust: rust,
      baseline: baseline,
      big: big,
      cfg: cfg,
      tls: Bench.Tls.from_env(),
      machine: machine(),
      os_pids: %{
        driver: System.pid(),
        rust: System.get_env("BENCH_RUST_OS_PID"),
        big: System.get_env("BENCH_BIG_OS_PID"),
        baseline:
          System.get_env("BENCH_BASELINE_OS_PID") || :erpc.call(baseline, System, :pid, [])
      }
    }

    load_start = loadavg()
    progress(cfg, "loopback floor")
    {loopback, errors} = attempt("loopback", [], fn -> Workloads.loopback(ctx) end)

    steps = [
      {"3. create and memory", &Workloads.create/1},
      {"1-2. get and update", &Workloads.get_update/1},
      {"4. non-primary-key filter", &Workloads.filter/1},
      {"5. through Ash", &Workloads.ash/1},
      {"7. Ash features: in the node vs the shim's fallback", &Workloads.ash_features/1}
    ]

    steps =
      if cfg.run_big do
        steps ++ [{"6. #{Workloads.fmt_int(cfg.big)} records on one node", &Workloads.big/1}]
      else
        steps
      end

    steps = if ctx.tls, do: steps ++ [{"8. get over TLS", &Bench.Tls.rows/1}], else: steps

    steps =
      if cfg.capacity,
        do: steps ++ [{"9. capacity (Rust load generator)", &Bench.Capacity.rows/1}],
        else: steps

    steps = if cfg[:only], do: Enum.filter(steps, &only?(&1, with_records(cfg.only))), else: steps

    {rows, errors} =
      Enum.reduce(steps, {[], errors}, fn {name, fun}, {rows, errors} ->
        progress(cfg, name)
        {new_rows, errors} = attempt(name, errors, fn -> fun.(ctx) end)
        {rows ++ (new_rows || []), errors}
      end)

    progress(cfg, "loopback floor again")
    {loopback_end, errors} = attempt("loopback (end)", errors, fn -> Workloads.loopback(ctx) end)
    rows = order(Report.evaluate(rows))
    timestamp = System.get_env("BENCH_TIMESTAMP") || timestamp()

    doc = %{
      timestamp: timestamp,
      mode: cfg.mode,
      mode_text: mode_text(cfg.mode),
      machine: ctx.machine,
      loopback: loopback || %{},
      loopback_end: loopback_end || %{},
      load_average: %{start: load_start, end: loadavg()},
      config: Map.drop(cfg, [:loopback_bin, :loadgen_bin, :verbose, :mode]),
      nodes: %{
        rust: rust,
        baseline: baseline,
        big: big,
        driver: node(),
        tls_rust: ctx.tls && ctx.tls.rust,
        tls_baseline: ctx.tls && ctx.tls.baseline
      },
      rows: rows,
      errors: Enum.reverse(errors)
    }

    write(doc)
    if errors == [], do: 0, else: 1
  end

  # Workloads 1 and 2 get and update the records workload 3 creates: naming them runs 3 too.
  defp with_records(only) do
    if Enum.any?(only, &(&1 in [1, 2])), do: Enum.uniq([3 | only]), else: only
  end

  # Whether a step ("3. ...", "1-2. ...") runs one of the workloads `only` names.
  defp only?({name, _fun}, only) do
    [numbers | _] = String.split(name, ".", parts: 2)
    numbers |> String.split("-") |> Enum.any?(&(String.to_integer(&1) in only))
  end

  defp attempt(name, errors, fun) do
    {fun.(), errors}
  rescue
    e ->
      message = Exception.format(:error, e, __STACKTRACE__)
      IO.puts(:stderr, "bench: workload #{name} failed:\n#{message}")
      {nil, [%{workload: name, error: Exception.message(e)} | errors]}
  catch
    kind, reason ->
      IO.puts(:stderr, "bench: workload #{name} failed: #{inspect({kind, reason})}")
      {nil, [%{workload: name, error: inspect({kind, reason})} | errors]}
  end

  # Table order: workload 1, 2, ..., 7; within a workload, as produced.
  defp order(rows) do
    rows
    |> Enum.with_index()
    |> Enum.sort_by(fn {row, i} -> {row.workload, i} end)
    |> Enum.map(&elem(&1, 0))
  end

  defp mode_text("full"), do: "Full run"
  defp mode_text("custom"), do: "Custom run (sizes in Configuration below)"
  defp mode_text("smoke"), do: "Smoke run (tiny sizes: the numbers mean nothing)"
  defp mode_text(mode), do: "Smoke run, #{String.trim_leading(mode, "smoke ")} (tiny sizes)"

  defp progress(cfg, text), do: if(cfg.verbose, do: IO.puts(:stderr, "bench: #{text}"))

  defp write(doc) do
    out = System.get_env("BENCH_OUT") || Path.expand("../out", File.cwd!())
    File.mkdir_p!(out)
    base = Path.join(out, "results-#{doc.timestamp}")
    markdown = Report.markdown(doc)
    errors = Enum.map_join(doc.errors, "\n", &"- **#{&1.workload} failed**: #{&1.error}")

    markdown =
      if doc.errors == [], do: markdown, else: markdown <> "\n## Errors\n\n" <> errors <> "\n"

    File.write!(base <> ".md", markdown)
    File.write!(base <> ".json", Jason.encode!(doc, pretty: true))
    File.write!(base <> ".svg", Chart.svg(doc))
    IO.puts(markdown)
    IO.puts(:stderr, "bench: wrote #{base}.md, .json and .svg")
  end

  # The 1-minute load average: other work on a shared machine shows here.
  defp loadavg do
    case File.read("/proc/loadavg") do
      {:ok, text} -> text |> String.split(" ") |> hd() |> String.to_float()
      _ -> nil
    end
  end

  defp timestamp do
    {{y, mo, d}, {h, mi, s}} = :calendar.universal_time()

    :io_lib.format("~4..0B~2..0B~2..0BT~2..0B~2..0B~2..0BZ", [y, mo, d, h, mi, s])
    |> IO.iodata_to_binary()
  end

  @doc "What the machine is: cores, CPU, RAM, OS, OTP/Elixir/Rust/Ash versions, date."
  def machine do
    cpuinfo = read("/proc/cpuinfo")
    meminfo = read("/proc/meminfo")
    os_release = read("/etc/os-release")

    %{
      nproc: cmd("nproc", []) || System.schedulers_online(),
      cpu_model: capture(cpuinfo, ~r/^model name\s*:\s*(.+)$/m) || "unknown CPU",
      ram_bytes:
        case capture(meminfo, ~r/^MemTotal:\s*(\d+) kB/m) do
          nil -> nil
          kb -> String.to_integer(kb) * 1024
        end,
      os: capture(os_release, ~r/^PRETTY_NAME="?([^"\n]+)"?$/m) || "unknown OS",
      kernel: cmd("uname", ["-r"]),
      otp: to_string(:erlang.system_info(:otp_release)),
      erts: to_string(:erlang.system_info(:version)),
      elixir: System.version(),
      rustc: cmd("rustc", ["--version"]) || "rustc ?",
      ash: to_string(Application.spec(:ash, :vsn)),
      date: Date.to_iso8601(Date.utc_today())
    }
  end

  defp read(path) do
    case File.read(path) do
      {:ok, text} -> text
      _ -> ""
    end
  end

  defp capture(text, regex) do
    case Regex.run(regex, text) do
      [_, value] -> String.trim(value)
      _ -> nil
    end
  end

  defp cmd(name, args) do
    with path when is_binary(path) <- System.find_executable(name),
         {out, 0} <- System.cmd(path, args, stderr_to_stdout: true) do
      out = String.trim(out)
      if name == "nproc", do: String.to_integer(out), else: out
    else
      _ -> nil
    end
  end
end
