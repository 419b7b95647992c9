defmodule Bench.Workloads do
  @moduledoc """
  The workloads, each run against the Rust node and the BEAM baseline back to back (warm-up
  first), returning result rows for `Bench.Report`.

  `ctx` holds the node names (`:rust`, `:big`, `:baseline`), the OS pids of the processes
  (`:os_pids`, for CPU accounting) and the configuration (`:cfg`, see `Bench.Driver`).

  Rows are maps: `table: "latency"` rows carry `rust` and `beam` stats (`Bench.Measure`);
  `table: "values"` rows carry `rust` and `reference` numbers with a `unit`.
  """
  require Ash.Query

  alias Bench.{Baseline, Data, Measure}

  @server :ash_gen_server
  @timeout 300_000

  @people :bench_people
  @people_small :bench_people_small
  @warmup :bench_warmup

  # -- helpers -------------------------------------------------------------------------------

  def rust_call(node, request), do: GenServer.call({@server, node}, request, @timeout)

  @doc "The resource workload 3 fills on both sides (ids 1..records), reused by workload 8."
  def people, do: @people

  defp ok!({:ok, _} = reply, _what), do: reply
  defp ok!(:ok, _what), do: :ok
  defp ok!(other, what), do: raise("#{what}: unexpected reply #{inspect(other, limit: 10)}")

  defp define!(node, resource),
    do: ok!(rust_call(node, {:define, resource, %{primary_key: [:id]}}), "define #{resource}")

  defp rss!(node) do
    {:ok, %{rss_bytes: rss}} = rust_call(node, :stats)
    if is_integer(rss), do: rss, else: raise("the node reports no rss_bytes")
  end

  defp rust_count(node, resource) do
    {:ok, %{count: count}} = rust_call(node, {:info, resource})
    count
  end

  defp beam_create(ctx, resource, id) do
    child = Baseline.child_spec_for(resource, %{id: id}, Data.person(id))

    case DynamicSupervisor.start_child({Baseline.supervisor(), ctx.baseline}, child) do
      {:ok, _pid} -> :ok
      other -> raise "baseline create #{id}: #{inspect(other)}"
    end
  end

  defp rust_create(node, resource, id),
    do: ok!(rust_call(node, {:create, resource, Data.person(id)}), "create #{id}")

  # Bulk loads of ids first..last in batches (Rust) / locally on the node (BEAM); not timed.
  # `opts` are the bulk_create's (`%{all_or_nothing: true}` for workload 6's second row).
  defp rust_load(node, resource, first, last, batch, opts \\ %{}) do
    first..last
    |> Stream.chunk_every(batch)
    |> Enum.each(fn ids ->
      {:ok, results} =
        rust_call(node, {:bulk_create, resource, Enum.map(ids, &Data.person/1), opts})

      unless Enum.all?(results, &match?({:ok, _}, &1)),
        do: raise("bulk_create into #{resource} failed: #{inspect(Enum.take(results, 3))}")
    end)
  end

  defp beam_load(ctx, resource, first, last) do
    loaded = :erpc.call(ctx.baseline, Baseline, :load_range, [resource, first, last], @timeout)
    if loaded != last - first + 1, do: raise("baseline load: #{loaded} of #{last - first + 1}")
  end

  defp cpu_of(ctx, side) do
    node_pid = if side == :beam, do: ctx.os_pids.baseline, else: ctx.os_pids.rust
    %{driver: ctx.os_pids.driver, node: node_pid}
  end

  # Rounds of closed-loop runs, the sides taking turns (the order rotates every round), each
  # run after a short warm-up; a side's rounds are pooled by Measure.merge/1.
  defp interleaved(ctx, funs, ops, callers, cpu_of) do
    rounds = ctx.cfg.rounds
    per_round = max(div(ops, rounds), callers)
    sides = Map.keys(funs) |> Enum.sort()

    raws =
      for round <- 0..(rounds - 1), side <- rotate(sides, round), reduce: %{} do
        acc ->
          fun = Map.fetch!(funs, side)
          offset = round * per_round
          Measure.run_raw(max(div(per_round, 10), callers), callers, fun, 1_000_000_000 + offset)

          raw =
            Measure.raw_with_cpu(cpu_of.(side), fn ->
              Measure.run_raw(per_round, callers, fun, offset)
            end)

          Map.update(acc, side, [raw], &[raw | &1])
      end

    Map.new(raws, fn {side, list} -> {side, Measure.merge(list)} end)
  end

  defp rotate(list, n) do
    k = rem(n, length(list))
    Enum.drop(list, k) ++ Enum.take(list, k)
  end

  defp log(ctx, message), do: if(ctx.cfg.verbose, do: IO.puts(:stderr, "  " <> message))

  # -- 0. loopback floor -----------------------------------------------------------------------

  @doc """
  The loopback floor: `loopback_rtt` unpinned, then with both threads on CPU 0 and with them on
  CPUs 0 and 1 (a wake-up across CPUs is what most calls between processes pay). Returns the
  unpinned result with the pinned ones under `"same_cpu"` and `"cross_cpu"`.
  """
  def loopback(ctx) do
    bin = ctx.cfg.loopback_bin
    unless bin && File.exists?(bin), do: raise("loopback_rtt binary not found: #{inspect(bin)}")
    iters = Integer.to_string(ctx.cfg.loopback_iters)

    run = fn extra ->
      case System.cmd(bin, ["--json", "--iters", iters | extra], stderr_to_stdout: true) do
        {out, 0} -> out |> String.trim() |> String.split("\n") |> List.last() |> Jason.decode!()
        {out, status} -> raise "loopback_rtt #{Enum.join(extra, " ")} exited #{status}: #{out}"
      end
    end

    # Pinning may be refused (a cpuset without CPU 0 or 1): then those rows are left empty.
    pinned = fn extra ->
      try do
        run.(extra)
      rescue
        _ -> nil
      end
    end

    cross =
      if System.schedulers_online() > 1,
        do: pinned.(["--server-cpu", "0", "--client-cpu", "1"])

    run.([])
    |> Map.put("same_cpu", pinned.(["--server-cpu", "0", "--client-cpu", "0"]))
    |> Map.put("cross_cpu", cross)
  end

  # -- 3. create + memory per record (runs first, on fresh nodes) ------------------------------

  def create(ctx) do
    %{records: n, create_callers: callers} = ctx.cfg
    per = div(n, callers)
    id = fn worker, i -> worker + 1 + i * callers end

    define!(ctx.rust, @warmup)
    define!(ctx.rust, @people)

    # Warm-up: a few records of another resource on each side (start-up paths, code loading).
    warm = max(min(div(n, 10), 2_000), callers)

    Measure.run(warm, callers, fn w, i -> beam_create(ctx, @warmup, 1_000_000_000 + id.(w, i)) end)

    Measure.run(warm, callers, fn w, i ->
      rust_create(ctx.rust, @warmup, 1_000_000_000 + id.(w, i))
    end)

    log(ctx, "create #{n} records on the BEAM baseline (#{callers} callers)")
    beam_mem_before = :erpc.call(ctx.baseline, Baseline, :memory, [], @timeout)

    {beam, beam_cpu} =
      Measure.with_cpu(cpu_of(ctx, :beam), fn ->
        Measure.run(per * callers, callers, fn w, i -> beam_create(ctx, @people, id.(w, i)) end)
      end)

    beam_mem_after = :erpc.call(ctx.baseline, Baseline, :memory, [], @timeout)
    beam_count = :erpc.call(ctx.baseline, Baseline, :count, [@people], @timeout)

    log(ctx, "create #{n} records on the Rust node (#{callers} callers)")
    rss_before = rss!(ctx.rust)

    {rust, rust_cpu} =
      Measure.with_cpu(cpu_of(ctx, :rust), fn ->
        Measure.run(per * callers, callers, fn w, i ->
          rust_create(ctx.rust, @people, id.(w, i))
        end)
      end)

    # Let the allocator settle before reading RSS (it is read, not waited on).
    Process.sleep(200)
    rss_after = rss!(ctx.rust)
    rust_count = rust_count(ctx.rust, @people)

    if beam_count != n or rust_count != n,
      do:
        raise("create: #{beam_count} records on the baseline, #{rust_count} on Rust, wanted #{n}")

    rust_per = (rss_after - rss_before) / n
    beam_per = (beam_mem_after - beam_mem_before) / n

    [
      %{
        id: "create",
        table: "latency",
        workload: "3",
        label: "create #{fmt_int(n)} records, #{callers} callers",
        rust: Map.put(rust, :cpu, rust_cpu),
        beam: Map.put(beam, :cpu, beam_cpu),
        rust_how: "GenServer.call({:ash_gen_server, rust}, {:create, r, record})",
        beam_how: "DynamicSupervisor.start_child({sup, baseline}, {Record, ...}) (remote)"
      },
      %{
        id: "create_total",
        table: "values",
        workload: "3",
        label: "create #{fmt_int(n)} records: wall time",
        unit: "s",
        rust: rust.wall_s,
        reference: beam.wall_s,
        reference_name: "BEAM"
      },
      %{
        id: "memory",
        table: "values",
        workload: "3",
        label: "memory per live record (#{fmt_int(n)} records)",
        unit: "B",
        rust: rust_per,
        reference: beam_per,
        reference_name: "BEAM",
        target: %{op: "<=", value: 0.25, text: "≤ 0.25× BEAM"},
        counted: true,
        detail: %{
          rust_rss_before: rss_before,
          rust_rss_after: rss_after,
          beam_memory_total_before: beam_mem_before,
          beam_memory_total_after: beam_mem_after,
          how:
            "Rust: delta of stats' rss_bytes / records; BEAM: delta of :erlang.memory(:total) " <>
              "after garbage-collecting every process / records"
        }
      }
    ]
  end

  # -- 1 and 2. get and update by primary key ---------------------------------------------------

  def get_update(ctx) do
    n = ctx.cfg.records
    k = min(ctx.cfg.keys, n)
    :rand.seed(:exsss, {1, 2, 3})
    keys = Enum.take_random(1..n, k)
    key_tuple = List.to_tuple(keys)

    beam_pids =
      ctx.baseline
      |> :erpc.call(Baseline, :pids, [@people, keys], @timeout)
      |> List.to_tuple()

    rust_pids =
      keys
      |> Task.async_stream(
        fn id ->
          {:ok, pid} = rust_call(ctx.rust, {:whereis, @people, %{id: id}})
          pid
        end,
        max_concurrency: 16,
        timeout: @timeout
      )
      |> Enum.map(fn {:ok, pid} -> pid end)
      |> List.to_tuple()

    pick = fn -> :rand.uniform(k) - 1 end

    get = %{
      beam: fn _w, _i -> {:ok, _} = GenServer.call(elem(beam_pids, pick.()), :get, @timeout) end,
      rust: fn _w, _i ->
        {:ok, _} = rust_call(ctx.rust, {:get, @people, %{id: elem(key_tuple, pick.())}})
      end,
      rust_pid: fn _w, _i ->
        {:ok, _} = GenServer.call(elem(rust_pids, pick.()), :get, @timeout)
      end
    }

    update = %{
      beam: fn _w, i ->
        {:ok, _} = GenServer.call(elem(beam_pids, pick.()), {:update, %{score: i}}, @timeout)
      end,
      rust: fn _w, i ->
        {:ok, _} =
          rust_call(ctx.rust, {:update, @people, %{id: elem(key_tuple, pick.())}, %{score: i}})
      end,
      rust_pid: fn _w, i ->
        {:ok, _} = GenServer.call(elem(rust_pids, pick.()), {:update, %{score: i}}, @timeout)
      end
    }

    for {name, workload, funs, rust_how, pid_how} <- [
          {"get", "1", get, "GenServer.call({:ash_gen_server, rust}, {:get, r, %{id: id}})",
           "GenServer.call(record_pid, :get)"},
          {"update", "2", update,
           "GenServer.call({:ash_gen_server, rust}, {:update, r, %{id: id}, %{score: n}})",
           "GenServer.call(record_pid, {:update, %{score: n}})"}
        ],
        callers <- ctx.cfg.callers,
        row <- get_update_rows(ctx, name, workload, funs, callers, rust_how, pid_how) do
      row
    end
  end

  defp get_update_rows(ctx, name, workload, funs, callers, rust_how, pid_how) do
    ops = ctx.cfg.ops
    log(ctx, "#{name}, #{callers} callers, #{ops} ops per side in #{ctx.cfg.rounds} rounds")

    %{beam: beam, rust: rust, rust_pid: rust_pid} =
      interleaved(ctx, funs, ops, callers, &cpu_of(ctx, &1))

    target =
      cond do
        callers == 1 -> %{metric: "p50_us", op: "<=", value: 0.7, text: "p50 ≤ 0.7× BEAM"}
        callers == 64 -> %{metric: "ops_s", op: ">=", value: 1.5, text: "ops/s ≥ 1.5× BEAM"}
        true -> nil
      end

    beam_how =
      "GenServer.call(record_pid, #{if name == "get", do: ":get", else: "{:update, %{score: n}}"}) (remote)"

    [
      %{
        id: "#{name}_c#{callers}",
        table: "latency",
        workload: workload,
        label: "#{name} by primary key, #{callers} caller#{if callers > 1, do: "s"}",
        rust: rust,
        beam: beam,
        target: target,
        counted: true,
        rust_how: rust_how,
        beam_how: beam_how
      },
      %{
        id: "#{name}_pid_c#{callers}",
        table: "latency",
        workload: workload,
        label: "#{name} via record pid (extra), #{callers} caller#{if callers > 1, do: "s"}",
        rust: rust_pid,
        beam: beam,
        target: target,
        counted: false,
        rust_how: pid_how <> " (pid from {:whereis, ...})",
        beam_how: beam_how
      }
    ]
  end

  # -- 4. non-primary-key filter ----------------------------------------------------------------

  def filter(ctx) do
    %{small: small, records: large} = ctx.cfg

    # The large set is the one workload 3 created; the small one is loaded here.
    define!(ctx.rust, @people_small)
    log(ctx, "load #{small} records for the small filter set")
    beam_load(ctx, @people_small, 1, small)
    rust_load(ctx.rust, @people_small, 1, small, ctx.cfg.batch)

    for {size_name, resource, n, iters} <- [
          {"small", @people_small, small, ctx.cfg.scan_iters_small},
          {"large", @people, large, ctx.cfg.scan_iters_large}
        ] do
      expected = Data.expected_matches(1, n)
      log(ctx, "filter over #{n} records: #{iters} scans on the baseline")

      beam_scan = fn _ ->
        {inner_us, matches} =
          :erpc.call(ctx.baseline, Baseline, :scan, [resource, Data.baseline_filter()], @timeout)

        if length(matches) != expected,
          do: raise("baseline scan: #{length(matches)} matches, expected #{expected}")

        inner_us
      end

      rust_query = fn _ ->
        {:ok, matches} = rust_call(ctx.rust, {:query, resource, %{filter: Data.node_filter()}})

        if length(matches) != expected,
          do: raise("rust query: #{length(matches)} matches, expected #{expected}")
      end

      beam_scan.(0)
      rust_query.(0)

      # Interleaved: one baseline scan, then `rust_per` node queries, `iters` times.
      rust_per = if iters > 1, do: 10, else: 1

      raws =
        for _ <- 1..iters do
          {Measure.raw_with_cpu(cpu_of(ctx, :beam), fn -> Measure.sequential_raw(1, beam_scan) end),
           Measure.raw_with_cpu(cpu_of(ctx, :rust), fn ->
             Measure.sequential_raw(rust_per, rust_query)
           end)}
        end

      beam = raws |> Enum.map(&elem(&1, 0)) |> Measure.merge()
      rust = raws |> Enum.map(&elem(&1, 1)) |> Measure.merge()

      %{
        id: "filter_#{size_name}",
        table: "latency",
        workload: "4",
        label:
          "filter #{Data.filter_text()} over #{fmt_int(n)} " <>
            "(#{expected} match#{if expected == 1, do: "", else: "es"})",
        rust: rust,
        beam: beam,
        target:
          if(size_name == "large",
            do: %{metric: "p50_us", op: "<=", value: 1 / 50, text: "≥ 50× faster (p50 ≤ 0.02×)"}
          ),
        counted: size_name == "large",
        rust_how: "GenServer.call({:ash_gen_server, rust}, {:query, r, %{filter: ...}})",
        beam_how:
          ":erpc.call(baseline, Bench.Baseline, :scan, [...]): Registry.select, then " <>
            "GenServer.call(pid, :get) on every record in turn (local), filter in the caller"
      }
    end
  end

  # -- 5. through Ash ---------------------------------------------------------------------------

  @ash_resources [beam: Bench.LocalPerson, rust: Bench.RustPerson]

  defp ash_clear(ctx, :rust, resource) do
    case rust_call(ctx.rust, {:clear, resource}) do
      {:ok, _} -> :ok
      {:error, {:unknown_resource, _}} -> :ok
    end
  end

  defp ash_clear(_ctx, :beam, resource), do: Bench.InProcessDataLayer.clear(resource)

  def ash(ctx) do
    ops = ctx.cfg.ash_ops
    for {side, r} <- @ash_resources, do: ash_clear(ctx, side, r)

    # Warm-up: the first action compiles nothing, but defines the resource on the node and
    # loads code; a tenth of the operations on ids of another range, then removed.
    for {_side, r} <- @ash_resources do
      for i <- 1..max(div(ops, 10), 10), do: Ash.create!(r, Data.person(50_000_000 + i))
      for i <- 1..max(div(ops, 10), 10), do: Ash.get!(r, 50_000_000 + i)
    end

    for {side, r} <- @ash_resources, do: ash_clear(ctx, side, r)
    first = 10_000_001
    log(ctx, "through Ash: create, get, update (#{ops} each per side, #{ctx.cfg.rounds} rounds)")

    cpu = fn side ->
      %{driver: ctx.os_pids.driver, node: if(side == :rust, do: ctx.os_pids.rust)}
    end

    create =
      interleaved(
        ctx,
        Map.new(@ash_resources, fn {side, r} ->
          {side, fn _w, i -> Ash.create!(r, Data.person(first + i)) end}
        end),
        ops,
        1,
        cpu
      )

    # The ids every side created (the warm-up rounds' ids are far above).
    created = max(div(ops, ctx.cfg.rounds), 1) * ctx.cfg.rounds
    ids = List.to_tuple(Enum.to_list(first..(first + created - 1)))
    pick = fn -> elem(ids, :rand.uniform(created) - 1) end

    get =
      interleaved(
        ctx,
        Map.new(@ash_resources, fn {side, r} -> {side, fn _w, _i -> Ash.get!(r, pick.()) end} end),
        ops,
        1,
        cpu
      )

    update_funs =
      Map.new(@ash_resources, fn {side, r} ->
        records = ids |> Tuple.to_list() |> Enum.map(&Ash.get!(r, &1)) |> List.to_tuple()

        {side,
         fn _w, i -> Ash.update!(elem(records, :rand.uniform(created) - 1), %{score: i}) end}
      end)

    update = interleaved(ctx, update_funs, ops, 1, cpu)

    action_rows =
      for {name, stats} <- [{"create", create}, {"get", get}, {"update", update}] do
        %{
          id: "ash_#{name}",
          table: "latency",
          workload: "5",
          label: "Ash #{name}#{if name == "create", do: "", else: " by primary key"}, 1 caller",
          rust: stats.rust,
          beam: stats.beam,
          target: %{metric: "p50_us", op: "<=", value: 1.2, text: "p50 ≤ 1.2× in-process"},
          counted: true,
          rust_how: "AshGenServer.DataLayer (records on the Rust node)",
          beam_how: "Bench.InProcessDataLayer (GenServer per record on the Ash node)"
        }
      end

    for {side, r} <- @ash_resources, do: ash_clear(ctx, side, r)
    read_rows = ash_filtered_reads(ctx)
    for {side, r} <- @ash_resources, do: ash_clear(ctx, side, r)
    action_rows ++ read_rows
  end

  defp ash_load(resource, ids, input, batch) do
    ids
    |> Stream.map(input)
    |> Stream.chunk_every(batch)
    |> Enum.each(fn inputs ->
      result =
        Ash.bulk_create(inputs, resource, :create,
          batch_size: batch,
          return_errors?: true,
          return_records?: false
        )

      if result.status != :success,
        do:
          raise("Ash.bulk_create into #{inspect(resource)}: #{inspect(result.errors, limit: 5)}")
    end)
  end

  defp ash_filtered_reads(ctx) do
    %{small: small, records: large} = ctx.cfg
    age = Data.filter_age()
    team = Data.filter_team()

    {rows, _loaded} =
      Enum.map_reduce(
        [{"small", small, ctx.cfg.scan_iters_small}, {"large", large, ctx.cfg.scan_iters_large}],
        0,
        fn {size_name, n, iters}, loaded ->
          load_us =
            Map.new(@ash_resources, fn {side, r} ->
              log(ctx, "through Ash: load #{n - loaded} more #{inspect(r)} (Ash.bulk_create)")

              {us, :ok} =
                Measure.timed(fn ->
                  ash_load(r, (loaded + 1)..n, &Data.person/1, ctx.cfg.batch)
                end)

              {side, us}
            end)

          expected = Data.expected_matches(1, n)

          read = fn r ->
            fn _ ->
              found = r |> Ash.Query.filter(age > ^age and team == ^team) |> Ash.read!()

              if length(found) != expected,
                do: raise("Ash read #{inspect(r)}: #{length(found)} found, expected #{expected}")
            end
          end

          for {_side, r} <- @ash_resources, do: read.(r).(0)
          rust_per = if iters > 1, do: 10, else: 1

          # Interleaved: one in-process read, then `rust_per` reads through the node, `iters` times.
          raws =
            for _ <- 1..iters, {side, r} <- @ash_resources do
              cpu = %{driver: ctx.os_pids.driver, node: if(side == :rust, do: ctx.os_pids.rust)}
              times = if side == :rust, do: rust_per, else: 1
              {side, Measure.raw_with_cpu(cpu, fn -> Measure.sequential_raw(times, read.(r)) end)}
            end

          stats =
            raws
            |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
            |> Map.new(fn {side, list} -> {side, Measure.merge(list)} end)

          row = %{
            id: "ash_filter_#{size_name}",
            table: "latency",
            workload: "5",
            label: "Ash read, filter #{Data.filter_text()} over #{fmt_int(n)}",
            rust: stats.rust,
            beam: stats.beam,
            target:
              if(size_name == "large",
                do: %{
                  metric: "p50_us",
                  op: "<=",
                  value: 1 / 20,
                  text: "≥ 20× faster (p50 ≤ 0.05×)"
                }
              ),
            counted: size_name == "large",
            rust_how: "AshGenServer.DataLayer: one {:query, ...} to the node",
            beam_how: "Bench.InProcessDataLayer: call every record, Ash.Filter.Runtime",
            detail: %{
              load_us_rust: load_us.rust,
              load_us_in_process: load_us.beam,
              load: "Ash.bulk_create, batches of #{ctx.cfg.batch} (not timed in the row)"
            }
          }

          {row, n}
        end
      )

    rows
  end

  # -- 7. Ash features: in the node vs the shim's fallback ---------------------------------------

  @counter_callers 64
  @page_offset 40
  @page_limit 20

  @doc """
  Two features of the data layer, each against the shim's fallback for it on the same Rust
  node: 64 callers incrementing one counter with an atomic update evaluated in the record's
  actor (`Bench.NodeCounter`) or by the compare-and-set loop (`Bench.CasCounter`,
  `atomics_in_node? false`); and a page of a filter and sort on a `utc_datetime_usec` over
  `records` events, in the node (`Bench.TypedEvent`) or by Ash on every record fetched
  (`Bench.OpaqueEvent`, a `NewType` the shim does not push down). In the rows, "rust" is the
  node's way and "beam" the fallback.
  """
  def ash_features(ctx) do
    cpu = fn _side -> %{driver: ctx.os_pids.driver, node: ctx.os_pids.rust} end
    [ash_counter(ctx, cpu) | ash_datetime_page(ctx, cpu)]
  end

  defp ash_counter(ctx, cpu) do
    sides = [rust: Bench.NodeCounter, beam: Bench.CasCounter]
    for {_side, r} <- sides, do: ash_clear(ctx, :rust, r)
    ops = ctx.cfg.ash_ops

    log(
      ctx,
      "through Ash: #{@counter_callers} callers increment one counter, #{ops} increments " <>
        "per side in #{ctx.cfg.rounds} rounds"
    )

    # One counter per side, and how many increments returned; both must agree at the end.
    counters =
      Map.new(sides, fn {side, r} ->
        {side, {r, Ash.create!(r, %{id: 1, count: 0}), :counters.new(1, [:write_concurrency])}}
      end)

    funs =
      Map.new(counters, fn {side, {_r, record, done}} ->
        {side,
         fn _w, _i ->
           Ash.update!(record, %{}, action: :increment)
           :counters.add(done, 1, 1)
         end}
      end)

    stats = interleaved(ctx, funs, ops, @counter_callers, cpu)

    for {_side, {r, record, done}} <- counters do
      final = Ash.get!(r, record.id).count
      returned = :counters.get(done, 1)

      if final != returned,
        do: raise("#{inspect(r)}: #{returned} increments returned, the count is #{final}")
    end

    for {_side, r} <- sides, do: ash_clear(ctx, :rust, r)

    %{
      id: "ash_counter_c#{@counter_callers}",
      table: "latency",
      workload: "7",
      label: "Ash atomic increment of one counter, #{@counter_callers} callers",
      rust: stats.rust,
      beam: stats.beam,
      target: %{metric: "ops_s", op: ">=", value: 3.0, text: "ops/s ≥ 3× compare-and-set"},
      counted: true,
      rust_how:
        "Ash.update!(counter, %{}, action: :increment), atomic_update(:count, expr(count + 1)): " <>
          "one update_where by primary key, the increment evaluated in the record's actor",
      beam_how:
        "the same on the same node with atomics_in_node? false: read, evaluate with Ash, " <>
          "update guarded by the values read, retry when stale"
    }
  end

  defp ash_datetime_page(ctx, cpu) do
    n = ctx.cfg.records
    iters = ctx.cfg.scan_iters_large
    sides = [rust: Bench.TypedEvent, beam: Bench.OpaqueEvent]
    for {_side, r} <- sides, do: ash_clear(ctx, :rust, r)

    load_us =
      Map.new(sides, fn {side, r} ->
        log(ctx, "through Ash: load #{n} #{inspect(r)} (Ash.bulk_create)")
        {us, :ok} = Measure.timed(fn -> ash_load(r, 1..n, &Data.event(&1, n), ctx.cfg.batch) end)
        {side, us}
      end)

    cutoff = Data.event_cutoff(n)
    expected = Data.expected_event_page(n, @page_offset, @page_limit)

    read = fn r ->
      fn _ ->
        page =
          r
          |> Ash.Query.filter(at > ^cutoff)
          |> Ash.Query.sort(at: :desc)
          |> Ash.read!(page: [offset: @page_offset, limit: @page_limit])

        ids = Enum.map(page.results, & &1.id)

        if ids != expected,
          do:
            raise("Ash page of #{inspect(r)}: ids #{inspect(ids)}, expected #{inspect(expected)}")
      end
    end

    log(ctx, "through Ash: datetime filter + sort + page over #{n}, #{iters} fallback reads")
    for {_side, r} <- sides, do: read.(r).(0)
    rust_per = if iters > 1, do: 10, else: 1

    # Interleaved: one fallback read, then `rust_per` reads in the node, `iters` times.
    stats =
      for _ <- 1..iters, {side, r} <- Enum.reverse(sides) do
        times = if side == :rust, do: rust_per, else: 1

        {side,
         Measure.raw_with_cpu(cpu.(side), fn -> Measure.sequential_raw(times, read.(r)) end)}
      end
      |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
      |> Map.new(fn {side, list} -> {side, Measure.merge(list)} end)

    for {_side, r} <- sides, do: ash_clear(ctx, :rust, r)

    [
      %{
        id: "ash_datetime_page",
        table: "latency",
        workload: "7",
        label: "Ash utc_datetime filter, sort and page over #{fmt_int(n)}",
        rust: stats.rust,
        beam: stats.beam,
        target: %{metric: "p50_us", op: "<=", value: 1 / 20, text: "≥ 20× faster (p50 ≤ 0.05×)"},
        counted: true,
        rust_how:
          "AshGenServer.DataLayer, at :utc_datetime_usec: one {:query, ...} with the filter, " <>
            "sort, offset and limit",
        beam_how:
          "the same on the same node with at a NewType of :utc_datetime_usec the shim does not " <>
            "push down: every record fetched, Ash filters, sorts and pages",
        detail: %{
          load_us_typed: load_us.rust,
          load_us_opaque: load_us.beam,
          load: "Ash.bulk_create, batches of #{ctx.cfg.batch} (not timed in the row)"
        }
      }
    ]
  end

  # -- 6. a million records on one node ---------------------------------------------------------

  def big(ctx) do
    %{big_small: small, big: big, batch: batch} = ctx.cfg
    node = ctx.big

    whole = [:big_whole_1, :big_whole_2, :big_whole_3]

    for r <- [:big_warmup, :big_small_1, :big_small_2, :big_small_3, :big_large] ++ whole,
        do: define!(node, r)

    rust_load(node, :big_warmup, 1, min(small, 5 * batch), batch)

    cpu = %{driver: ctx.os_pids.driver, node: ctx.os_pids[:big]}

    small_runs =
      for r <- [:big_small_1, :big_small_2, :big_small_3] do
        {{us, :ok}, cpu_used} =
          Measure.with_cpu(cpu, fn ->
            Measure.timed(fn -> rust_load(node, r, 1, small, batch) end)
          end)

        %{us_per_record: us / small, cpu: cpu_used}
      end

    small_median = small_runs |> Enum.sort_by(& &1.us_per_record) |> Enum.at(1)
    small_per = small_median.us_per_record

    # The same loads as one step each (all or nothing: every batch checked under the index
    # locks, then created), what the Ash data layer sends for a plain bulk create.
    whole_runs =
      for r <- whole do
        {us, :ok} =
          Measure.timed(fn -> rust_load(node, r, 1, small, batch, %{all_or_nothing: true}) end)

        us / small
      end

    whole_per = whole_runs |> Enum.sort() |> Enum.at(1)
    log(ctx, "create #{big} records on a fresh Rust node (bulk_create, batches of #{batch})")
    rss_before = rss!(node)

    # Timed as a whole, and by tenths to show whether the per-record time grows with the count.
    tenth = max(div(big, 10), 1)

    {tenths, big_cpu} =
      Measure.with_cpu(cpu, fn ->
        for start <- 1..big//tenth do
          {us, :ok} =
            Measure.timed(fn ->
              rust_load(node, :big_large, start, min(start + tenth - 1, big), batch)
            end)

          {us, min(start + tenth - 1, big) - start + 1}
        end
      end)

    us = tenths |> Enum.map(&elem(&1, 0)) |> Enum.sum()
    tenths = Enum.map(tenths, fn {us, n} -> us / n end)
    Process.sleep(200)
    rss_after = rss!(node)
    count = rust_count(node, :big_large)
    if count != big, do: raise("big: #{count} records on the node, wanted #{big}")
    {:ok, %{records: total_records}} = rust_call(node, :stats)
    big_per = us / big
    ram = ctx.machine[:ram_bytes]

    per_record_cpu = fn cpu_used, n ->
      Map.new(cpu_used, fn {k, v} -> {k, v && v * 1.0e6 / n} end)
    end

    [
      %{
        id: "big_create",
        table: "values",
        workload: "6",
        label: "bulk_create per record: #{fmt_int(big)} vs #{fmt_int(small)} (Rust only)",
        unit: "µs",
        rust: big_per,
        reference: small_per,
        reference_name: "Rust at #{fmt_int(small)}",
        target: %{op: "<=", value: 1.0, text: "not slower than at #{fmt_int(small)} (≤ 1.0×)"},
        counted: true,
        detail: %{
          small_runs_us_per_record: Enum.map(small_runs, & &1.us_per_record),
          big_tenths_us_per_record: tenths,
          cpu_us_per_record_small: per_record_cpu.(small_median.cpu, small),
          cpu_us_per_record_big: per_record_cpu.(big_cpu, big),
          big_total_s: us / 1.0e6,
          batch: batch,
          how: "one caller, {bulk_create, r, batch, %{}} requests; 10k: median of 3 runs"
        }
      },
      %{
        id: "big_create_whole",
        table: "values",
        workload: "6",
        label: "bulk_create all_or_nothing per record, #{fmt_int(small)} (Rust only)",
        unit: "µs",
        rust: whole_per,
        reference: small_per,
        reference_name: "per-record results",
        target: %{op: "<=", value: 1.0, text: "not slower than per-record results (≤ 1.0×)"},
        counted: false,
        detail: %{
          runs_us_per_record: whole_runs,
          batch: batch,
          how:
            "one caller, {bulk_create, r, batch, %{all_or_nothing => true}} requests; " <>
              "median of 3 runs, against the small runs above"
        }
      },
      %{
        id: "big_memory",
        table: "values",
        workload: "6",
        label: "RSS per record with #{fmt_int(big)} live records (Rust only)",
        unit: "B",
        rust: (rss_after - rss_before) / big,
        reference: nil,
        reference_name: nil,
        detail: %{
          rss_before: rss_before,
          rss_after: rss_after,
          records_on_node: total_records,
          ram_bytes: ram,
          rss_share_of_ram: if(ram, do: rss_after / ram)
        }
      }
    ]
  end

  def fmt_int(n) when is_integer(n) do
    n
    |> Integer.to_string()
    |> String.reverse()
    |> String.replace(~r/(\d{3})(?=\d)/, "\\1,")
    |> String.reverse()
  end
end
