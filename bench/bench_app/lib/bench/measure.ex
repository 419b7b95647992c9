defmodule Bench.Measure do
  @moduledoc """
  Timing helpers: closed-loop callers, latency percentiles, CPU time of OS processes.

  `run/3` starts `callers` processes that each do their share of `ops` operations back to back
  (a closed loop: a caller sends its next request when the previous reply is in), timing each one
  with the monotonic clock; throughput is operations over the wall time from the start signal to
  the last reply.
  """

  @type stats :: %{
          n: non_neg_integer,
          ops_s: float,
          p50_us: float,
          p99_us: float,
          mean_us: float,
          wall_s: float
        }

  @doc """
  Runs `fun.(worker, i)` `ops` times in total, spread over `callers` processes. `fun` must
  return normally; a raise in any caller aborts the measurement with its reason. Returns the
  stats of the latencies.
  """
  @spec run(pos_integer, pos_integer, (non_neg_integer, non_neg_integer -> any)) :: stats
  def run(ops, callers, fun), do: merge([run_raw(ops, callers, fun)])

  @doc """
  `run/3` without the statistics: `%{latencies: [native], wall: native}`, to be combined with
  other rounds by `merge/1`. `offset` is added to `i` (distinct ids across rounds).
  """
  def run_raw(ops, callers, fun, offset \\ 0) do
    per = max(div(ops, callers), 1)
    parent = self()
    go = make_ref()

    workers =
      for worker <- 0..(callers - 1) do
        spawn_monitor(fn ->
          :rand.seed(:exsss, {worker + 1, offset + 7, 13})

          receive do
            ^go -> :ok
          end

          latencies = loop(fun, worker, offset, offset + per, [])
          send(parent, {:latencies, self(), latencies})
        end)
      end

    started = System.monotonic_time()
    Enum.each(workers, fn {pid, _} -> send(pid, go) end)

    latencies =
      Enum.flat_map(workers, fn {pid, ref} ->
        receive do
          {:latencies, ^pid, latencies} ->
            receive do
              {:DOWN, ^ref, :process, ^pid, _} -> latencies
            end

          {:DOWN, ^ref, :process, ^pid, reason} ->
            Enum.each(workers, fn {other, _} -> Process.exit(other, :kill) end)
            raise "benchmark caller failed: #{inspect(reason, limit: 20)}"
        end
      end)

    %{latencies: latencies, wall: System.monotonic_time() - started}
  end

  @doc """
  Stats over several raw rounds: latencies pooled (p50, p99, mean), wall times and CPU added;
  `ops_s` is the median of the rounds' throughputs (a round disturbed by other work on the
  machine moves it less than a pooled figure), `ops_s_pooled` all operations over all wall time.
  """
  def merge(raws) do
    stats = stats(Enum.flat_map(raws, & &1.latencies), raws |> Enum.map(& &1.wall) |> Enum.sum())

    round_ops =
      raws
      |> Enum.map(fn raw -> length(raw.latencies) / max(to_us(raw.wall) / 1.0e6, 1.0e-9) end)
      |> Enum.sort()

    stats =
      stats
      |> Map.put(:ops_s_pooled, stats.ops_s)
      |> Map.put(:ops_s, median(round_ops))
      |> Map.put(:round_ops_s, round_ops)

    case Enum.filter(raws, &Map.has_key?(&1, :cpu)) do
      [] ->
        stats

      with_cpu ->
        cpu =
          with_cpu
          |> Enum.map(& &1.cpu)
          |> Enum.reduce(fn a, b ->
            Map.merge(a, b, fn
              _k, x, y when is_number(x) and is_number(y) -> Float.round(x + y, 2)
              _k, _, _ -> nil
            end)
          end)

        stats |> Map.put(:cpu, cpu) |> Map.put(:rounds, length(raws))
    end
  end

  @doc "`sequential/2` without the statistics (see `run_raw/4`)."
  def sequential_raw(iterations, fun) do
    started = System.monotonic_time()

    latencies =
      for i <- 0..(iterations - 1) do
        t0 = System.monotonic_time()
        fun.(i)
        System.monotonic_time() - t0
      end

    %{latencies: latencies, wall: System.monotonic_time() - started}
  end

  @doc "Runs `fun` (returning a raw round) and adds the CPU used meanwhile to it."
  def raw_with_cpu(processes, fun) do
    {raw, cpu} = with_cpu(processes, fun)
    Map.put(raw, :cpu, cpu)
  end

  defp loop(_fun, _worker, last, last, acc), do: acc

  defp loop(fun, worker, i, last, acc) do
    t0 = System.monotonic_time()
    fun.(worker, i)
    loop(fun, worker, i + 1, last, [System.monotonic_time() - t0 | acc])
  end

  @doc "Times `fun.(i)` `iterations` times in a row (for slow operations such as scans)."
  @spec sequential(pos_integer, (non_neg_integer -> any)) :: stats
  def sequential(iterations, fun) do
    %{latencies: latencies, wall: wall} = sequential_raw(iterations, fun)
    stats(latencies, wall)
  end

  @doc "Stats of latencies in native time units and the wall time they took."
  def stats(latencies, wall_native) do
    sorted = latencies |> Enum.map(&to_us/1) |> Enum.sort() |> List.to_tuple()
    n = tuple_size(sorted)
    wall_s = to_us(wall_native) / 1.0e6

    %{
      n: n,
      ops_s: if(wall_s > 0, do: n / wall_s, else: 0.0),
      p50_us: percentile(sorted, 50),
      p99_us: percentile(sorted, 99),
      mean_us: if(n > 0, do: Enum.sum(Tuple.to_list(sorted)) / n, else: 0.0),
      wall_s: wall_s
    }
  end

  defp percentile({}, _p), do: 0.0

  defp percentile(sorted, p) do
    rank = ceil(p / 100 * tuple_size(sorted))
    elem(sorted, min(max(rank, 1), tuple_size(sorted)) - 1)
  end

  defp median([]), do: 0.0

  defp median(sorted) do
    n = length(sorted)

    if rem(n, 2) == 1,
      do: Enum.at(sorted, div(n, 2)),
      else: (Enum.at(sorted, div(n, 2) - 1) + Enum.at(sorted, div(n, 2))) / 2
  end

  def to_us(native), do: System.convert_time_unit(native, :native, :nanosecond) / 1000

  @doc "Wall time of `fun` in microseconds, and its result."
  def timed(fun) do
    t0 = System.monotonic_time()
    result = fun.()
    {to_us(System.monotonic_time() - t0), result}
  end

  @doc "User + system CPU seconds an OS process has used so far (Linux), or nil."
  @spec cpu_seconds(String.t() | integer | nil) :: float | nil
  def cpu_seconds(nil), do: nil

  def cpu_seconds(os_pid) do
    with {:ok, stat} <- File.read("/proc/#{os_pid}/stat"),
         [_, rest] <- String.split(stat, ") ", parts: 2),
         fields <- String.split(rest, " "),
         {utime, ""} <- Integer.parse(Enum.at(fields, 11)),
         {stime, ""} <- Integer.parse(Enum.at(fields, 12)) do
      (utime + stime) / clock_ticks()
    else
      _ -> nil
    end
  end

  defp clock_ticks do
    case :persistent_term.get({__MODULE__, :ticks}, nil) do
      nil ->
        ticks =
          case System.cmd("getconf", ["CLK_TCK"], stderr_to_stdout: true) do
            {out, 0} -> String.to_integer(String.trim(out))
            _ -> 100
          end

        :persistent_term.put({__MODULE__, :ticks}, ticks)
        ticks

      ticks ->
        ticks
    end
  rescue
    _ -> 100
  end

  @doc """
  Runs `fun` and returns `{result, cpu}` where cpu maps each name of `processes`
  (`%{name => os_pid}`) to the CPU seconds it used meanwhile.
  """
  def with_cpu(processes, fun) do
    before = Map.new(processes, fn {name, pid} -> {name, cpu_seconds(pid)} end)
    result = fun.()

    cpu =
      Map.new(processes, fn {name, pid} ->
        case {before[name], cpu_seconds(pid)} do
          {a, b} when is_number(a) and is_number(b) -> {name, Float.round(b - a, 2)}
          _ -> {name, nil}
        end
      end)

    {result, cpu}
  end
end
