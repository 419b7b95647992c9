# Compares one run of Ash's suite with baseline.txt and prints the report (run.sh calls it).
#
#   elixir report.exs --mode ets|ours --results RESULTS.jsonl --baseline baseline.txt
#                     --allow-list allow_list.txt [--node-status FILE] [--metrics-status FILE]
#                     [--full-report FILE]
#                     [--write-baseline] [--partial]
#
# A run in several VMs (run.sh's partitions) gives --results, --node-status and --metrics-status
# once per VM: the results are joined, every VM must have finished, every node stopped cleanly
# and every node's counters match its VM's.
#
# ours: prints the totals and every test that passes on Ets (is in baseline.txt) but did not pass
# here, with the first lines of its error, grouped by the allow-list's causes; exits 1 if one of
# them is not on the allow-list, if the node did not exit 0 on SIGTERM, if its request counters
# (metrics) differ from the requests the VM's telemetry counted, or if the run did not finish. Allow-listed tests that pass now are listed (not an error), so the list can shrink.
# ets: prints the totals and how the run differs from baseline.txt; --write-baseline rewrites
# baseline.txt from this run instead.
# --partial: only part of the suite ran (mix test arguments); baseline tests that did not run
# are not counted as failing.
defmodule AshSuite.Report do
  @error_lines_listed 3
  @error_lines_unlisted 15

  def main(argv) do
    {opts, _, invalid} =
      OptionParser.parse(argv,
        strict: [
          mode: :string,
          results: :keep,
          baseline: :string,
          allow_list: :string,
          node_status: :keep,
          metrics_status: :keep,
          full_report: :string,
          write_baseline: :boolean,
          partial: :boolean
        ]
      )

    if invalid != [], do: halt("unknown options #{inspect(invalid)}")
    results_paths = Keyword.get_values(opts, :results)
    if results_paths == [], do: halt("--results is required")
    load_jason(hd(results_paths))
    read = Enum.map(results_paths, &{&1, read_results(&1)})
    results = Enum.flat_map(read, fn {_path, {results, _finished?}} -> results end)

    problems =
      for {path, {_, false}} <- read,
          do: "the run did not finish (no suite_finished line in #{path}; see its test log)"

    problems =
      case opts[:mode] do
        "ets" -> problems ++ ets(results, opts)
        "ours" -> problems ++ ours(results, opts)
        other -> halt("--mode must be ets or ours, not #{inspect(other)}")
      end

    if problems == [] do
      IO.puts("\nash_suite: OK")
    else
      IO.puts("\nash_suite: FAILED")
      Enum.each(problems, &IO.puts("  - " <> &1))
      System.halt(1)
    end
  end

  # --- ets -----------------------------------------------------------------------------------

  defp ets(results, opts) do
    IO.puts("\n== Ash's suite on Ash.DataLayer.Ets")
    IO.puts("   " <> totals(results))
    passed = passed_ids(results)

    if opts[:write_baseline] do
      if opts[:partial], do: halt("--write-baseline needs a whole run")
      write_baseline(opts[:baseline], results, passed)
      IO.puts("   wrote #{length(passed)} passing tests to #{opts[:baseline]}")
      []
    else
      baseline = read_baseline(opts[:baseline])
      ran = MapSet.new(results, & &1["id"])
      now = MapSet.new(passed)

      lost =
        baseline |> Enum.filter(&MapSet.member?(ran, &1)) |> Enum.reject(&MapSet.member?(now, &1))

      gained = Enum.reject(passed, &MapSet.member?(MapSet.new(baseline), &1))

      IO.puts(
        "   compared with baseline.txt: #{length(lost)} no longer pass, #{length(gained)} pass and are not in it"
      )

      by_id = Map.new(results, &{&1["id"], &1})
      for id <- lost, do: print_test(by_id[id], id, @error_lines_unlisted)
      for id <- gained, do: IO.puts("   + " <> id)

      if lost != [] or gained != [],
        do: IO.puts("   (refresh it with run.sh --refresh-baseline if this is the new normal)")

      []
    end
  end

  defp write_baseline(path, results, passed) do
    header = """
    # Tests of Ash 3.30.1's own suite (../shared/ash-tests) that pass on Ash.DataLayer.Ets on
    # this setup (Elixir #{System.version()}, OTP #{System.otp_release()}; excluded.txt left out).
    # Written by `integration/ash_suite/run.sh --refresh-baseline`; one test id per line
    # (`Module :: test name`). The `ours` run is compared with this list.
    # ets: #{totals(results)}
    """

    File.write!(path, header <> Enum.map_join(Enum.sort(passed), "", &(&1 <> "\n")))
  end

  # --- ours ----------------------------------------------------------------------------------

  defp ours(results, opts) do
    baseline = read_baseline(opts[:baseline])
    baseline_set = MapSet.new(baseline)
    {causes, allowed} = read_allow_list(opts[:allow_list])
    by_id = Map.new(results, &{&1["id"], &1})
    ets_line = baseline_totals(opts[:baseline])

    IO.puts("\n== Ash's suite on AshGenServer.DataLayer (a real node), compared with Ets")
    if ets_line, do: IO.puts("   ets (baseline.txt): " <> ets_line)
    IO.puts("   ours:               " <> totals(results))

    # A partial run (mix test arguments) compares the tests that ran: not those it left out.
    compared =
      if opts[:partial],
        do: Enum.filter(baseline, &(by_id[&1]["state"] in ["passed", "failed", "invalid"])),
        else: baseline

    regressions = Enum.reject(compared, &(by_id[&1]["state"] == "passed"))
    both = length(compared) - length(regressions)
    only_ours = Enum.count(passed_ids(results), &(not MapSet.member?(baseline_set, &1)))

    IO.puts(
      "   of the #{length(compared)} tests that pass on Ets: #{both} pass on ours " <>
        "(#{percent(both, length(compared))}), #{length(regressions)} do not" <>
        if(only_ours > 0, do: "; #{only_ours} tests fail on Ets and pass on ours", else: "")
    )

    {listed, unlisted} = Enum.split_with(regressions, &Map.has_key?(allowed, &1))

    IO.puts("\n== Pass on Ets, fail on ours, allow-listed (allow_list.txt), by cause")

    for {key, reason} <- causes do
      ids = Enum.filter(listed, &(allowed[&1] == key))

      if ids != [] do
        IO.puts("\n-- #{key} (#{length(ids)}): #{reason}")
        for id <- ids, do: print_test(by_id[id], id, @error_lines_listed)
      end
    end

    if unlisted != [] do
      IO.puts("\n== Pass on Ets, fail on ours, NOT on the allow-list (#{length(unlisted)})")
      for id <- unlisted, do: print_test(by_id[id], id, @error_lines_unlisted)
    end

    fixed = allowed |> Map.keys() |> Enum.filter(&(by_id[&1]["state"] == "passed")) |> Enum.sort()
    stale = allowed |> Map.keys() |> Enum.reject(&MapSet.member?(baseline_set, &1)) |> Enum.sort()

    if fixed != [] do
      IO.puts(
        "\n== Allow-listed tests that pass now (#{length(fixed)}): remove them from allow_list.txt"
      )

      for id <- fixed, do: IO.puts("   " <> id)
    end

    if stale != [] do
      IO.puts(
        "\n== Allow-list entries that are not in baseline.txt (#{length(stale)}): remove them"
      )

      for id <- stale, do: IO.puts("   " <> id)
    end

    IO.puts("\n== Summary")

    IO.puts(
      "   pass on Ets, fail on ours: #{length(regressions)}, of which #{length(listed)} allow-listed:"
    )

    for {key, _} <- causes do
      n = Enum.count(listed, &(allowed[&1] == key))
      if n > 0, do: IO.puts("     #{String.pad_leading(Integer.to_string(n), 4)}  #{key}")
    end

    if opts[:full_report], do: write_full_report(opts[:full_report], regressions, by_id, allowed)

    node_problems = Enum.flat_map(Keyword.get_values(opts, :node_status), &node_problems/1)

    metrics_problems =
      Enum.flat_map(Keyword.get_values(opts, :metrics_status), &metrics_problems/1)

    unlisted_problems =
      if unlisted == [],
        do: [],
        else: [
          "#{length(unlisted)} tests pass on Ets and fail on ours without being on allow_list.txt (listed above)"
        ]

    node_problems ++ metrics_problems ++ unlisted_problems
  end

  # A node's exit status file (one per VM): no problem only for a clean stop on SIGTERM.
  defp node_problems(path) do
    case File.read(path) do
      {:ok, status} ->
        status = String.trim(status)
        IO.puts("   node stopped with SIGTERM: #{status}")

        if status == "exit 0",
          do: [],
          else: ["the node did not stop cleanly on SIGTERM: #{status}"]

      {:error, _} ->
        ["no node exit status in #{path} (the suite did not stop the node)"]
    end
  end

  # A node's metrics check (one per VM): "ok ..." when its counters match the VM's telemetry.
  defp metrics_problems(path) do
    case File.read(path) do
      {:ok, "ok" <> _ = status} ->
        IO.puts("   node metrics: #{String.trim(status)}")
        []

      {:ok, status} ->
        ["the node's metrics: #{String.trim(status)}"]

      {:error, _} ->
        ["no metrics check in #{path} (the suite did not stop the node)"]
    end
  end

  defp write_full_report(path, regressions, by_id, allowed) do
    text =
      Enum.map_join(regressions, "\n", fn id ->
        test = by_id[id] || %{}

        "#{id}\n  cause: #{allowed[id] || "NOT ALLOW-LISTED"}\n  #{test["file"]} (#{test["state"] || "did not run"})\n" <>
          indent(test["error"] || "", 4) <> "\n"
      end)

    File.write!(path, text)
    IO.puts("   every failure in full: #{path}")
  end

  # --- printing ------------------------------------------------------------------------------

  defp print_test(nil, id, _lines), do: IO.puts("   #{id}\n      (did not run on ours)")

  defp print_test(test, id, lines) do
    error =
      (test["error"] || test["state"])
      |> String.split("\n")
      |> Enum.map(&String.trim/1)
      |> Enum.reject(&(&1 == "" or &1 == test["file"]))
      |> Enum.take(lines)
      |> Enum.map_join("\n", &("      " <> truncate(&1, 200)))

    IO.puts("   #{id}  [#{test["file"]}]\n#{error}")
  end

  defp truncate(line, max) do
    if String.length(line) > max, do: String.slice(line, 0, max) <> "...", else: line
  end

  defp indent(text, n),
    do: text |> String.split("\n") |> Enum.map_join("\n", &(String.duplicate(" ", n) <> &1))

  defp totals(results) do
    counts = Enum.frequencies_by(results, & &1["state"])
    n = length(results)

    "#{n} tests, #{counts["passed"] || 0} passed, #{counts["failed"] || 0} failed" <>
      Enum.map_join(["invalid", "skipped", "excluded"], "", fn s ->
        if counts[s], do: ", #{counts[s]} #{s}", else: ""
      end)
  end

  defp percent(_, 0), do: "-"
  defp percent(a, b), do: :erlang.float_to_binary(100 * a / b, decimals: 1) <> " %"

  defp passed_ids(results), do: for(%{"state" => "passed", "id" => id} <- results, do: id)

  # --- files ---------------------------------------------------------------------------------

  # Jason comes from the mode's build (the results are JSON lines).
  defp load_jason(results_path) do
    ebin = Path.join([Path.dirname(results_path), "_build", "test", "lib", "jason", "ebin"])
    Code.prepend_path(ebin)
    unless Code.ensure_loaded?(Jason), do: halt("Jason not found in #{ebin}")
  end

  defp read_results(path) do
    unless File.exists?(path),
      do: halt("no results file #{path} (the suite did not start; see test.log)")

    lines =
      path
      |> File.read!()
      |> String.split("\n", trim: true)
      |> Enum.map(&Jason.decode!/1)

    {Enum.filter(lines, &Map.has_key?(&1, "id")),
     Enum.any?(lines, &(&1["suite_finished"] == true))}
  end

  defp read_baseline(path) do
    path
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.reject(&String.starts_with?(&1, "#"))
  end

  defp baseline_totals(path) do
    path
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value(fn
      "# ets: " <> totals -> totals
      _ -> nil
    end)
  end

  # "## key: reason" starts a cause; the test ids after it (one a line) are allowed for it.
  defp read_allow_list(path) do
    {causes, allowed, _} =
      path
      |> File.read!()
      |> String.split("\n")
      |> Enum.reduce({[], %{}, nil}, fn line, {causes, allowed, current} ->
        cond do
          String.starts_with?(line, "## ") ->
            case String.split(String.trim_leading(line, "## "), ":", parts: 2) do
              [key, reason] when reason != "" ->
                {[{String.trim(key), String.trim(reason)} | causes], allowed, String.trim(key)}

              _ ->
                halt("allow_list.txt: a cause needs `## key: reason`: #{inspect(line)}")
            end

          String.trim(line) == "" or String.starts_with?(line, "#") ->
            {causes, allowed, current}

          current == nil ->
            halt("allow_list.txt: #{inspect(line)} comes before any `## key: reason` line")

          Map.has_key?(allowed, line) ->
            halt("allow_list.txt: #{inspect(line)} is listed twice")

          true ->
            {causes, Map.put(allowed, line, current), current}
        end
      end)

    {Enum.reverse(causes), allowed}
  end

  defp halt(message) do
    IO.puts(:stderr, "report.exs: " <> message)
    System.halt(2)
  end
end

AshSuite.Report.main(System.argv())
