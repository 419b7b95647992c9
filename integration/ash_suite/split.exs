# Splits the suite's test files between the VMs of an `ours` run so that each VM gets about the
# same work (run.sh calls it), and keeps the weights it splits by.
#
#   elixir split.exs --dir DIR --parts N --weights file_weights.txt
#       prints N lines, each the test files (relative to DIR) one VM runs, separated by spaces
#   elixir split.exs --write-weights file_weights.txt --results R1.jsonl [--results R2.jsonl ...]
#       rewrites the weights from a run's results: per file, the seconds its tests took
#
# ExUnit's own `--partitions` deals the sorted files out in turn, whatever each costs: on this
# suite its two VMs took 267 s and 354 s. Here the files go, heaviest first, to the VM with the
# least work so far (weights: the seconds the file's tests took in a run, plus a fixed cost per
# file for compiling and loading it; a file the weights do not know counts as the median).
defmodule AshSuite.Split do
  # Seconds a test file costs beyond its tests' own time (compiling and loading it).
  @per_file 0.4

  def main(argv) do
    {opts, _, invalid} =
      OptionParser.parse(argv,
        strict: [
          dir: :string,
          parts: :integer,
          weights: :string,
          write_weights: :string,
          results: :keep
        ]
      )

    if invalid != [], do: fail("unknown options #{inspect(invalid)}")

    case opts[:write_weights] do
      nil -> split(opts)
      path -> write_weights(path, Keyword.get_values(opts, :results))
    end
  end

  defp split(opts) do
    dir = opts[:dir] || fail("--dir is required")
    parts = opts[:parts] || fail("--parts is required")
    if parts < 1, do: fail("--parts must be positive")
    weights = read_weights(opts[:weights])

    files =
      Path.wildcard(Path.join([dir, "test", "**", "*_test.exs"]))
      |> Enum.map(&Path.relative_to(&1, dir))
      |> Enum.sort()

    known = for f <- files, Map.has_key?(weights, f), do: weights[f]
    median = if known == [], do: 1.0, else: Enum.at(Enum.sort(known), div(length(known), 2))

    {buckets, loads} =
      files
      |> Enum.map(&{&1, Map.get(weights, &1, median) + @per_file})
      |> Enum.sort_by(fn {f, w} -> {-w, f} end)
      |> Enum.reduce({Map.new(1..parts, &{&1, []}), Map.new(1..parts, &{&1, 0.0})}, fn {f, w},
                                                                                       {buckets,
                                                                                        loads} ->
        {part, load} = Enum.min_by(loads, fn {p, l} -> {l, p} end)
        {Map.update!(buckets, part, &[f | &1]), Map.put(loads, part, load + w)}
      end)

    for part <- 1..parts do
      IO.puts(buckets[part] |> Enum.sort() |> Enum.join(" "))
    end

    IO.puts(
      :stderr,
      "   split: " <>
        Enum.map_join(1..parts, ", ", fn p ->
          "VM #{p} #{length(buckets[p])} files, ~#{round(loads[p])} s of tests"
        end)
    )
  end

  defp read_weights(nil), do: %{}

  defp read_weights(path) do
    path
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.reject(&String.starts_with?(&1, "#"))
    |> Map.new(fn line ->
      [seconds, file] = String.split(line, " ", parts: 2)
      {file, String.to_float(seconds)}
    end)
  end

  defp write_weights(path, results) do
    if results == [], do: fail("--results is required with --write-weights")
    # Jason comes from the run's build (beside the results).
    Code.prepend_path(
      Path.join([Path.dirname(hd(results)), "_build", "test", "lib", "jason", "ebin"])
    )

    unless Code.ensure_loaded?(Jason), do: fail("Jason not found beside #{hd(results)}")

    weights =
      for file <- results,
          line <- File.stream!(file),
          %{"file" => where, "time_us" => us} <- [apply(Jason, :decode!, [line])],
          reduce: %{} do
        acc ->
          [file | _] = String.split(where, ":")
          Map.update(acc, file, us, &(&1 + us))
      end

    lines =
      for {file, us} <- Enum.sort(weights) do
        :io_lib.format("~.2f ~s", [us / 1_000_000, file]) |> IO.iodata_to_binary()
      end

    File.write!(path, [
      "# Seconds each test file's tests took in an `ours` run (split.exs --write-weights).\n",
      Enum.join(lines, "\n"),
      "\n"
    ])

    IO.puts("split: #{map_size(weights)} files' weights written to #{path}")
  end

  defp fail(message) do
    IO.puts(:stderr, "split.exs: #{message}")
    System.halt(2)
  end
end

AshSuite.Split.main(System.argv())
