# Builds (or refreshes) the mix project that runs Ash's own test suite in one mode.
#
#   elixir prepare.exs --mode ets|ours --src DIR --dest DIR
#
# DIR given as --src holds Ash's `test/` and `config/` (read only). --dest receives a mix project:
# `mix.exs`, `config/config.exs` and `test/`, the suite's files minus those in excluded.txt, and
# in `ours` mode transformed so that every resource on `Ash.DataLayer.Ets` is on
# `AshGenServer.DataLayer` instead (see README.md). Files are only rewritten when their content
# changes, so Mix recompiles only what changed between runs. Line numbers are kept: a test's
# file:line is the same in both modes.
defmodule AshSuite.Prepare do
  @here __DIR__

  def main(argv) do
    {opts, _, invalid} =
      OptionParser.parse(argv, strict: [mode: :string, src: :string, dest: :string])

    if invalid != [], do: fail("unknown options #{inspect(invalid)}")

    mode =
      case opts[:mode] do
        "ets" -> :ets
        "ours" -> :ours
        other -> fail("--mode must be ets or ours, not #{inspect(other)}")
      end

    src = Path.expand(opts[:src] || fail("--src is required"))
    dest = Path.expand(opts[:dest] || fail("--dest is required"))

    for dir <- ["test", "config"], not File.dir?(Path.join(src, dir)) do
      fail("#{Path.join(src, dir)} is missing")
    end

    excluded = excluded()
    File.mkdir_p!(dest)

    test_src = Path.join(src, "test")

    files =
      Path.wildcard(Path.join(test_src, "**/*"), match_dot: true)
      |> Enum.filter(&File.regular?/1)
      |> Enum.map(&Path.relative_to(&1, test_src))
      |> Enum.reject(&excluded?(&1, excluded))
      |> Enum.sort()

    stats = %{ets_resources: 0, ets_sections: 0, cases: 0}

    {written, stats} =
      Enum.map_reduce(files, stats, fn rel, stats ->
        content = File.read!(Path.join(test_src, rel))
        {content, stats} = transform(mode, rel, content, stats)
        write_if_changed(Path.join([dest, "test", rel]), content)
        {Path.join("test", rel), stats}
      end)

    remove_stale(Path.join(dest, "test"), MapSet.new(written, &Path.join(dest, &1)))

    config = File.read!(Path.join([src, "config", "config.exs"]))
    write_if_changed(Path.join([dest, "config", "config.exs"]), config(mode, config))
    write_if_changed(Path.join(dest, "mix.exs"), mix_exs(mode))

    test_files = Enum.count(files, &String.ends_with?(&1, "_test.exs"))

    if mode == :ours and stats.cases != test_files do
      fail(
        "#{stats.cases} of #{test_files} test files got the per-test clear (a new `use ExUnit.Case` form?)"
      )
    end

    IO.puts(
      "prepare: #{mode} suite in #{dest}: #{test_files} test files, " <>
        "#{length(files) - test_files} other files, #{map_size(excluded)} exclusions" <>
        if(mode == :ours,
          do:
            ", #{stats.ets_resources} resources and #{stats.ets_sections} `ets` sections switched",
          else: ""
        )
    )
  end

  # --- excluded.txt --------------------------------------------------------------------------

  defp excluded do
    Path.join(@here, "excluded.txt")
    |> File.read!()
    |> String.split("\n")
    |> Enum.map(&String.trim/1)
    |> Enum.reject(&(&1 == "" or String.starts_with?(&1, "#")))
    |> Map.new(fn line ->
      case String.split(line, "|", parts: 2) do
        [path, reason] -> {String.trim(path), String.trim(reason)}
        _ -> fail("excluded.txt: no `| reason` in #{inspect(line)}")
      end
    end)
  end

  defp excluded?(rel, excluded) do
    Enum.any?(Map.keys(excluded), fn path ->
      if String.ends_with?(path, "/"), do: String.starts_with?(rel, path), else: rel == path
    end)
  end

  # --- the transformation --------------------------------------------------------------------

  # Before anything else: the Rust node, the node config and the per-test clear bookkeeping.
  # (One line, so that the helper's own line numbers stay as they were.)
  @start_node "AshSuite.Node.start_suite!(); "

  defp transform(:ets, _rel, content, stats), do: {content, stats}

  defp transform(:ours, "test_helper.exs", content, stats) do
    if String.contains?(content, "ExUnit.start("),
      do: {@start_node <> content, stats},
      else: fail("test_helper.exs: no ExUnit.start(...)")
  end

  defp transform(:ours, rel, content, stats) do
    if Path.extname(rel) in [".ex", ".exs"] do
      {content, resources} = switch_data_layer(content)
      {content, sections} = blank_ets_sections(content)

      {content, cases} =
        if String.ends_with?(rel, "_test.exs"), do: add_clear(content), else: {content, 0}

      {content,
       %{
         stats
         | ets_resources: stats.ets_resources + resources,
           ets_sections: stats.ets_sections + sections,
           cases: stats.cases + cases
       }}
    else
      {content, stats}
    end
  end

  @data_layer ~r/data_layer:(\s*)Ash\.DataLayer\.Ets\b(?!\.)/

  defp switch_data_layer(content) do
    count = length(Regex.scan(@data_layer, content))
    {Regex.replace(@data_layer, content, "data_layer:\\1AshGenServer.DataLayer"), count}
  end

  # `ets do ... end` (the Ets DSL section: only `private? true` in this suite) becomes blank
  # lines. `private?` gives each test process its own tables; here the node is shared and
  # emptied before every test instead.
  defp blank_ets_sections(content) do
    lines = String.split(content, "\n")

    {out, count, _} =
      Enum.reduce(lines, {[], 0, nil}, fn line, {out, count, open} ->
        case open do
          nil ->
            case Regex.run(~r/^(\s*)ets do\s*$/, line) do
              [_, indent] -> {["" | out], count + 1, indent}
              nil -> {[line | out], count, nil}
            end

          indent ->
            if line == indent <> "end" or String.trim_trailing(line) == indent <> "end",
              do: {["" | out], count, nil},
              else: {["" | out], count, indent}
        end
      end)

    {out |> Enum.reverse() |> Enum.join("\n"), count}
  end

  # Every test module empties the node before its `setup_all` and before each of its tests
  # (`AshSuite.Clear`), on the same line as `use ExUnit.Case` so that line numbers do not move,
  # ahead of the module's own callbacks.
  @use_case ~r/^(\s*use ExUnit\.Case(?:, async: (?:true|false))?)[ \t]*$/m

  defp add_clear(content) do
    # (1 per test file that got it, whatever its number of test modules)
    count = if Regex.match?(@use_case, content), do: 1, else: 0
    {Regex.replace(@use_case, content, "\\1; use AshSuite.Clear"), count}
  end

  # --- config and mix.exs --------------------------------------------------------------------

  # Tz is not among the offline packages: without this line Elixir keeps its UTC-only database
  # (tests that need zones fail in both modes).
  defp config(mode, config) do
    config =
      String.replace(
        config,
        "  config :elixir, :time_zone_database, Tz.TimeZoneDatabase\n",
        "  # (Tz time zone database: not available offline, left out by integration/ash_suite)\n"
      )

    if String.contains?(config, "Tz.TimeZoneDatabase"),
      do: fail("config.exs: could not drop the Tz line"),
      else: config <> extra_config(mode)
  end

  defp extra_config(:ets), do: ""

  defp extra_config(:ours) do
    """

    # integration/ash_suite: the node is started by test/test_helper.exs (AshSuite.Node), which
    # sets `config :ash_gen_server, node: ...`.
    config :ash_gen_server, call_timeout: 10_000
    """
  end

  defp mix_exs(mode) do
    lib = Path.join(@here, "lib")
    bridge = Path.expand("../../elixir_bridge", @here)

    paths =
      ["test/support", Path.join(lib, "common")] ++
        if mode == :ours, do: [Path.join(lib, "ours")], else: []

    bridge_dep = if mode == :ours, do: ", {:ash_gen_server, path: #{inspect(bridge)}}", else: ""

    """
    # Generated by integration/ash_suite/prepare.exs (mode: #{mode}); do not edit.
    defmodule AshSuite.#{Macro.camelize(to_string(mode))}.MixProject do
      use Mix.Project

      @offline_dir System.get_env("ASH_GEN_SERVER_OFFLINE_DEPS")

      if @offline_dir do
        Code.require_file("offline_deps.exs", @offline_dir)
      end

      def project do
        [
          app: :ash_suite_#{mode},
          version: "0.1.0",
          elixir: "~> 1.14",
          elixirc_paths: #{inspect(paths)},
          consolidate_protocols: false,
          start_permanent: false,
          deps: deps()
        ]
      end

      def application, do: [extra_applications: [:logger, :mnesia]]

      if @offline_dir do
        defp deps, do: OfflineDeps.deps()#{if bridge_dep != "", do: " ++ [" <> String.trim_leading(bridge_dep, ", ") <> "]", else: ""}
      else
        defp deps do
          [{:ash, "== 3.30.1"}, {:picosat_elixir, "~> 0.2"}, {:stream_data, "~> 1.0"}#{bridge_dep}]
        end
      end
    end
    """
  end

  # --- files ---------------------------------------------------------------------------------

  defp write_if_changed(path, content) do
    unless File.exists?(path) and File.read!(path) == content do
      File.mkdir_p!(Path.dirname(path))
      File.write!(path, content)
    end
  end

  defp remove_stale(dir, keep) do
    for path <- Path.wildcard(Path.join(dir, "**/*"), match_dot: true),
        File.regular?(path),
        not MapSet.member?(keep, path) do
      File.rm!(path)
    end
  end

  defp fail(message) do
    IO.puts(:stderr, "prepare.exs: " <> message)
    System.halt(2)
  end
end

AshSuite.Prepare.main(System.argv())
