defmodule AshSuite.Node do
  @moduledoc """
  The Rust node of an `ours` run, and the clear before every test.

  `start_suite!/0` (first thing in the suite's `test_helper.exs`) starts
  `$ASH_GEN_SERVER_BIN` under a unique name with this VM's cookie (run.sh starts the VM with
  `--name ... --cookie <unique>`), points `config :ash_gen_server, node: ...` at it, and registers
  an `ExUnit.after_suite/1` callback that stops the node with SIGTERM and writes its exit status
  to `$ASH_SUITE_NODE_STATUS` (`exit 0` for a clean stop), which `report.exs` checks.

  Every test module gets `use AshSuite.Clear` (prepare.exs adds it after `use ExUnit.Case`),
  whose `setup_all` calls `module_started/0` and whose `setup` calls `before_test/0`, before the
  module's own: each sends `{clear, Resource}` for every resource that a request of this VM was
  about since the last clear (`define` and `clear` aside), seen through the bridge's
  `[:ash_gen_server, :request, :start]` telemetry event. Only those can hold records (the node
  is this run's own), so this empties every resource on the node without a request per defined
  resource (several hundred by the end of the suite). Records written by a module's
  `setup_all` are its fixtures: they are kept for its tests and cleared when the next module
  starts.

  The node serves Prometheus metrics (`--metrics-addr 127.0.0.1:<a free port>`, unless
  `$ASH_SUITE_NODE_ARGS` gives one). Before it is stopped, `stop_suite/0` scrapes them over
  HTTP (`:httpc`), prints the totals, and checks that `ash_gen_server_requests_total{kind,
  result}` equals, kind by kind and result by result, the requests this VM's telemetry counted
  (those that reached the node: an unreachable node's error is not counted; a call the node
  could not parse is counted under the kind `invalid`, so each kind's errors may fall short by
  exactly the `invalid` ones); the outcome goes to `$ASH_SUITE_METRICS_STATUS` (`ok ...` or what differs), which `report.exs` checks.

  The node runs under a small `sh` wrapper that kills it when the port's stdin closes, so it
  never outlives the VM, even one killed with SIGKILL.
  """
  use GenServer

  @table __MODULE__.Touched
  @stats __MODULE__.Stats
  @pinned __MODULE__.Pinned
  @ready_timeout 20_000
  @stop_timeout 15_000

  def start_suite! do
    unless Node.alive?() do
      raise "the test VM is not distributed: run it with --name and --cookie (run.sh does)"
    end

    bin = System.get_env("ASH_GEN_SERVER_BIN") || raise "ASH_GEN_SERVER_BIN is not set"
    unless File.regular?(bin), do: raise("the node binary #{bin} does not exist")

    name = :"ash_suite_rust_#{System.unique_integer([:positive])}_#{System.pid()}@127.0.0.1"
    {args, metrics_url} = node_args()
    :persistent_term.put({__MODULE__, :metrics_url}, metrics_url)
    {:ok, pid} = GenServer.start(__MODULE__, {bin, name, args}, name: __MODULE__)

    case GenServer.call(pid, :await_ready, @ready_timeout + 1_000) do
      :ok -> :ok
      {:error, reason} -> raise "the Rust node #{name} did not start: #{inspect(reason)}"
    end

    Application.put_env(:ash_gen_server, :node, name)

    :ok =
      :telemetry.attach(
        "ash-suite-touched",
        [:ash_gen_server, :request, :start],
        &__MODULE__.touched/4,
        nil
      )

    :ok =
      :telemetry.attach(
        "ash-suite-request-stats",
        [:ash_gen_server, :request, :stop],
        &__MODULE__.count_request/4,
        nil
      )

    ExUnit.after_suite(fn _ -> stop_suite() end)
    IO.puts("ash_suite: testing against #{name} (#{bin}) from #{node()}")
    :ok
  end

  @doc false
  def touched(_event, _measurements, %{resource: resource, request: request}, _config)
      when is_atom(resource) and not is_nil(resource) and request not in [:clear, :define] do
    :ets.insert(@table, {resource})
  end

  def touched(_event, _measurements, _metadata, _config), do: :ok

  # `$ASH_SUITE_NODE_ARGS`, plus `--metrics-addr` on a free port unless they set one; and the
  # URL of the metrics.
  defp node_args do
    args = String.split(System.get_env("ASH_SUITE_NODE_ARGS") || "")

    case Enum.drop_while(args, &(&1 != "--metrics-addr")) do
      ["--metrics-addr", addr | _] ->
        {args, "http://#{addr}/metrics"}

      _ ->
        {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1}, reuseaddr: true)
        {:ok, port} = :inet.port(socket)
        :ok = :gen_tcp.close(socket)
        addr = "127.0.0.1:#{port}"
        {args ++ ["--metrics-addr", addr], "http://#{addr}/metrics"}
    end
  end

  @doc false
  def count_request(_event, %{duration: duration}, %{request: request} = metadata, _config) do
    us = System.convert_time_unit(duration, :native, :microsecond)

    :ets.update_counter(
      @stats,
      {:request, request},
      [{2, 1}, {3, us}],
      {{:request, request}, 0, 0}
    )

    # what the node's `requests_total{kind, result}` should count: requests that reached it
    case metadata do
      %{reply: {:error, %AshGenServer.Error.NodeUnavailable{}}} ->
        :ok

      %{reply: reply} ->
        result = if match?({:error, _}, reply), do: "error", else: "ok"
        key = {:sent, to_string(request), result}
        :ets.update_counter(@stats, key, {2, 1}, {key, 0})
    end
  end

  @doc """
  Called first in every test module's `setup_all`: empties every resource written since the
  last clear, those of the previous module's `setup_all` included.
  """
  def module_started do
    pinned = for {resource} <- :ets.tab2list(@pinned), do: resource
    :ets.delete_all_objects(@pinned)
    clear(Enum.uniq(pinned ++ take_touched()))
    :ets.insert(@stats, {:phase, :setup_all})
    :ok
  end

  @doc """
  Called first in every test's `setup`: empties every resource written since the last clear,
  except those the module's `setup_all` wrote (their records are the module's fixtures, as
  with an Ets table that is not `private?`; they are emptied when the next module starts).
  """
  def before_test do
    case :ets.lookup(@stats, :phase) do
      [{:phase, :setup_all}] ->
        :ets.insert(@pinned, Enum.map(take_touched(), &{&1}))
        :ets.insert(@stats, {:phase, :tests})
        count_clear(0, 0)

      _ ->
        take_touched()
        |> Enum.reject(&:ets.member(@pinned, &1))
        |> clear()
    end

    :ok
  end

  defp take_touched do
    for {resource} <- :ets.tab2list(@table) do
      :ets.delete(@table, resource)
      resource
    end
  end

  defp clear(resources) do
    started = System.monotonic_time()

    for resource <- resources do
      case AshGenServer.request(resource, {:clear, resource}) do
        {:ok, _removed} -> :ok
        # The resource could not be defined on the node (no primary key...): it has no records.
        {:error, %AshGenServer.Error.NodeError{request: :define}} -> :ok
        other -> raise "clearing #{inspect(resource)} on the node: #{inspect(other)}"
      end
    end

    us = System.convert_time_unit(System.monotonic_time() - started, :native, :microsecond)
    count_clear(length(resources), us)
  end

  defp count_clear(resources, us) do
    :ets.update_counter(@stats, :clear, [{2, 1}, {3, us}, {4, resources}], {:clear, 0, 0, 0})
  end

  @doc "Checks the node's metrics, stops the node with SIGTERM and records its exit status."
  def stop_suite do
    metrics = check_metrics()
    IO.puts("ash_suite: metrics: #{metrics}")

    if path = System.get_env("ASH_SUITE_METRICS_STATUS") do
      File.write!(path, metrics <> "\n")
    end

    status =
      try do
        GenServer.call(__MODULE__, :stop, @stop_timeout + 1_000)
      catch
        :exit, reason -> "no answer from the node's owner: #{inspect(reason)}"
      end

    print_stats()
    IO.puts("ash_suite: node stopped with SIGTERM: #{status}")

    if path = System.get_env("ASH_SUITE_NODE_STATUS") do
      File.write!(path, status <> "\n")
    end

    :ok
  end

  # The node's request counters against what this VM's telemetry counted: "ok ..." or what
  # differs.
  defp check_metrics do
    url = :persistent_term.get({__MODULE__, :metrics_url})
    {:ok, _} = Application.ensure_all_started(:inets)

    {:ok, {{_, 200, _}, _headers, body}} =
      :httpc.request(:get, {String.to_charlist(url), []}, [timeout: 10_000], [])

    counted =
      for line <- String.split(List.to_string(body), "\n"),
          [_, labels, value] <- [
            Regex.run(~r/^ash_gen_server_requests_total\{(.*)\} (\S+)$/, line)
          ],
          into: %{} do
        [_, kind] = Regex.run(~r/kind="([^"]*)"/, labels)
        [_, result] = Regex.run(~r/result="([^"]*)"/, labels)
        {value, ""} = Float.parse(value)
        {{kind, result}, round(value)}
      end

    sent =
      for {{:sent, kind, result}, n} <- :ets.tab2list(@stats), into: %{}, do: {{kind, result}, n}

    keys = Enum.sort(Enum.uniq(Map.keys(counted) ++ Map.keys(sent)))

    # A call the node cannot parse is counted under the kind `invalid` (an error), not under
    # its name: each kind's errors may fall short of the telemetry's by exactly those.
    count = fn map, key -> Map.get(map, key, 0) end
    invalid = count.(counted, {"invalid", "error"})

    unparsed =
      for {kind, "error"} = key <- keys, kind != "invalid", reduce: 0 do
        n -> n + max(count.(sent, key) - count.(counted, key), 0)
      end

    differences =
      for {kind, result} = key <- keys,
          key != {"invalid", "error"},
          node = count.(counted, key),
          told = count.(sent, key),
          not (node == told or (result == "error" and kind != "invalid" and node < told)) do
        "#{kind}/#{result}: node #{node}, telemetry #{told}"
      end

    differences =
      if unparsed == invalid,
        do: differences,
        else:
          differences ++
            ["invalid/error: node #{invalid}, errors missing from the other kinds #{unparsed}"]

    totals =
      Enum.map_join(keys, ", ", fn {kind, result} = key ->
        "#{kind}/#{result} #{Map.get(counted, key, 0)}"
      end)

    cond do
      counted == %{} and sent == %{} ->
        "ok: no requests (a part of the suite that never calls the node)"

      counted == %{} ->
        "no ash_gen_server_requests_total samples at #{url}"

      differences == [] ->
        "ok: the node counted #{Enum.sum(Map.values(counted))} requests as the telemetry did (#{totals})"

      true ->
        "the node's request counters differ from the telemetry: " <> Enum.join(differences, "; ")
    end
  rescue
    error -> "could not check the metrics: #{Exception.message(error)}"
  catch
    kind, reason -> "could not check the metrics: #{inspect({kind, reason})}"
  end

  # Where the time went: the requests to the node (count, total time) and the clears.
  defp print_stats do
    stats = :ets.tab2list(@stats)

    requests =
      for {{:request, name}, count, us} <- stats do
        {name, count, us}
      end

    {n, us} = Enum.reduce(requests, {0, 0}, fn {_, c, t}, {n, us} -> {n + c, us + t} end)
    IO.puts("ash_suite: #{n} requests to the node, #{div(us, 1000)} ms in all:")

    for {name, count, us} <- Enum.sort_by(requests, &(-elem(&1, 2))) do
      IO.puts("  #{inspect(name)}: #{count} requests, #{div(us, 1000)} ms")
    end

    case List.keyfind(stats, :clear, 0) do
      {:clear, tests, us, resources} ->
        IO.puts(
          "ash_suite: clears: #{tests} (modules and tests), #{resources} resources cleared, #{div(us, 1000)} ms in all"
        )

      nil ->
        :ok
    end
  rescue
    _ -> :ok
  end

  # --- the process owning the node's port and the touched-resources table ---------------------

  @impl true
  def init({bin, name, node_args}) do
    :ets.new(@table, [:named_table, :public, :set, write_concurrency: true])
    :ets.new(@stats, [:named_table, :public, :set, write_concurrency: true])
    :ets.new(@pinned, [:named_table, :public, :set])
    log = System.get_env("ASH_SUITE_NODE_LOG") || Path.expand("rust_node.log")
    File.write!(log, "== #{name}\n", [:append])

    args =
      ["start", "--name", to_string(name), "--cookie", to_string(Node.get_cookie())] ++ node_args

    # The node's stdout goes to the port; a background reader holds the port's stdin (fd 3, as
    # background jobs of a non-interactive shell get /dev/null) and kills the node on EOF. The
    # wrapper exits with the node's status.
    command = """
    exec 3<&0 2>>#{sh_escape(log)}
    #{sh_escape(bin)} #{Enum.map_join(args, " ", &sh_escape/1)} 2>>#{sh_escape(log)} </dev/null &
    child=$!
    echo "node_os_pid $child"
    ( while read -r _ <&3; do :; done; kill -9 "$child" 2>/dev/null ) >/dev/null 2>&1 &
    wait "$child"
    """

    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        {:line, 4096},
        {:args, ["-c", command]},
        {:env, [{~c"RUST_LOG", String.to_charlist(System.get_env("RUST_LOG") || "warn")}]}
      ])

    send(self(), :poll)

    {:ok,
     %{
       port: port,
       os_pid: nil,
       name: name,
       log: log,
       ready?: false,
       stdout_ready?: false,
       waiting: [],
       stopping: [],
       deadline: System.monotonic_time(:millisecond) + @ready_timeout,
       exit: nil
     }}
  end

  @impl true
  def handle_call(:await_ready, from, state) do
    cond do
      state.ready? -> {:reply, :ok, state}
      state.exit -> {:reply, {:error, state.exit}, state}
      true -> {:noreply, %{state | waiting: [from | state.waiting]}}
    end
  end

  def handle_call(:stop, from, state) do
    cond do
      state.exit != nil ->
        {:reply, "the node had already exited: #{inspect(state.exit)}", state}

      state.os_pid == nil ->
        {:reply, "the node's OS pid is unknown", state}

      true ->
        System.cmd("kill", ["-TERM", state.os_pid], stderr_to_stdout: true)
        Process.send_after(self(), :stop_timeout, @stop_timeout)
        {:noreply, %{state | stopping: [from | state.stopping]}}
    end
  end

  @impl true
  def handle_info({port, {:data, {_, "node_os_pid " <> pid}}}, %{port: port} = state) do
    {:noreply, %{state | os_pid: String.trim(pid)}}
  end

  def handle_info({port, {:data, {_, line}}}, %{port: port} = state) do
    File.write!(state.log, ["stdout: ", line, "\n"], [:append])

    {:noreply,
     %{state | stdout_ready?: state.stdout_ready? or String.starts_with?(line, "ready")}}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    state = %{state | exit: {:exit_status, status}}
    Enum.each(state.waiting, &GenServer.reply(&1, {:error, state.exit}))
    Enum.each(state.stopping, &GenServer.reply(&1, "exit #{status}"))
    {:noreply, %{state | waiting: [], stopping: []}}
  end

  def handle_info(:stop_timeout, %{stopping: [_ | _]} = state) do
    if state.os_pid, do: System.cmd("kill", ["-KILL", state.os_pid], stderr_to_stdout: true)

    Enum.each(
      state.stopping,
      &GenServer.reply(&1, "no exit within #{@stop_timeout} ms of SIGTERM (killed)")
    )

    {:noreply, %{state | stopping: []}}
  end

  def handle_info(:poll, %{ready?: false, exit: nil} = state) do
    cond do
      state.stdout_ready? and Node.ping(state.name) == :pong ->
        Enum.each(state.waiting, &GenServer.reply(&1, :ok))
        {:noreply, %{state | ready?: true, waiting: []}}

      System.monotonic_time(:millisecond) > state.deadline ->
        Enum.each(state.waiting, &GenServer.reply(&1, {:error, :timeout}))
        {:noreply, %{state | waiting: [], exit: :timeout}}

      true ->
        Process.send_after(self(), :poll, 50)
        {:noreply, state}
    end
  end

  def handle_info(_message, state), do: {:noreply, state}

  defp sh_escape(arg), do: "'" <> String.replace(to_string(arg), "'", "'\\''") <> "'"
end
