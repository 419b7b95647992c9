defmodule AshApp.RustNode do
  @moduledoc """
  Starts the real Rust `ash-gen-server` binary for the test suite and stops it at exit.

  The binary is `$ASH_GEN_SERVER_BIN`, default `../../target/release/ash-gen-server` relative to
  this project. Each start uses a fresh node name (`ash_rust_<unique>@127.0.0.1`), this VM's
  cookie and `--enable-fault-injection`; its stdout and stderr go to `rust_node.log` here.

  With `ASH_GEN_SERVER_SSL_DIST_OPTFILE` set, the node runs TLS distribution
  (`--proto-dist inet_tls --ssl-dist-optfile` that file): this VM must then run it too
  (`elixir --erl "-proto_dist inet_tls -ssl_dist_optfile FILE"`, see `integration/run_ash_tls.sh`).

  The node runs under a small `sh` wrapper that kills it as soon as the wrapper's stdin (the
  port) closes, so the node never outlives the test VM, even one killed with SIGKILL. A process
  owns the port; `stop/1` sends the node SIGTERM, as an operator would, and returns its exit
  status (a node that does not exit within 13 s, its 10 s shutdown budget and a margin, is
  killed and reported as `:timeout`); `kill/1` sends it SIGKILL (a crash).
  """
  use GenServer

  @ready_timeout 20_000

  def default_bin do
    System.get_env("ASH_GEN_SERVER_BIN") ||
      Path.expand("../../target/release/ash-gen-server", File.cwd!())
  end

  @doc "Makes this VM a distributed node (epmd started if needed) unless it already is one."
  def ensure_distributed! do
    unless Node.alive?() do
      System.cmd("epmd", ["-daemon"])
      name = :"ash_test_#{System.unique_integer([:positive])}_#{System.pid()}@127.0.0.1"

      case Node.start(name, :longnames) do
        {:ok, _} -> :ok
        {:error, reason} -> raise "could not make the test VM distributed: #{inspect(reason)}"
      end

      Node.set_cookie(:ash_gen_server_test_cookie)
    end

    :ok
  end

  @doc """
  Starts a node (a new unique name unless `:name` is given); returns its name. More `start`
  flags come from `:args`, default `config :ash_app, rust_node_args: [...]` (which
  `test_helper.exs` sets, so a node restarted by a test gets them too).
  """
  def start!(opts \\ []) do
    bin = Keyword.get(opts, :bin, default_bin())

    unless File.regular?(bin) do
      raise """
      the Rust node binary #{bin} does not exist.
      Build it first (`cargo build --release` at the repository root) or set ASH_GEN_SERVER_BIN.
      """
    end

    name =
      Keyword.get_lazy(opts, :name, fn ->
        :"ash_rust_#{System.unique_integer([:positive])}_#{System.pid()}@127.0.0.1"
      end)

    {:ok, pid} = GenServer.start(__MODULE__, {bin, name, args(opts)})

    case GenServer.call(pid, :await_ready, @ready_timeout + 1_000) do
      :ok ->
        name

      {:error, reason} ->
        stop(pid)
        raise "the Rust node #{name} did not start: #{inspect(reason)} (see rust_node.log)"
    end
  end

  @doc """
  Starts a cluster of `count` nodes (`--cluster`, the others `--join` the first), each with
  `extra_args` (not `rust_node_args`: one metrics port cannot serve several nodes), and returns their names once the cluster is healthy with
  every member in it (bounded: 30 s).
  """
  def start_cluster!(count, extra_args \\ []) do
    base = ["--cluster" | extra_args]
    first = start!(args: base)

    members = [
      first | for(_ <- 2..count//1, do: start!(args: base ++ ["--join", to_string(first)]))
    ]

    AshApp.Helpers.wait_until(
      fn ->
        case AshGenServer.Client.call(:cluster, node: first) do
          {:ok, %{healthy: true, members: in_cluster}} -> length(in_cluster) == count
          _ -> false
        end
      end,
      30_000,
      50
    )

    members
  end

  defp args(opts) do
    Keyword.get_lazy(opts, :args, fn -> Application.get_env(:ash_app, :rust_node_args, []) end)
  end

  @doc """
  Stops the node started under `name` with SIGTERM; returns its exit status (0 for a clean
  stop), `{:already_exited, status}`, `:timeout` (it was killed) or `:not_running`.
  """
  def stop(name) when is_atom(name) do
    case :global.whereis_name({__MODULE__, name}) do
      :undefined -> :not_running
      pid -> stop(pid)
    end
  end

  def stop(pid) when is_pid(pid) do
    status = GenServer.call(pid, :sigterm, 20_000)
    GenServer.stop(pid, :normal, 10_000)
    status
  catch
    :exit, _ -> :not_running
  end

  @doc """
  Kills the node started under `name` with SIGKILL (a crash: no drain) and returns its exit
  status once it is gone, `{:already_exited, status}` or `:not_running`.
  """
  def kill(name) when is_atom(name) do
    case :global.whereis_name({__MODULE__, name}) do
      :undefined -> :not_running
      pid -> GenServer.call(pid, {:signal, "-KILL"}, 15_000)
    end
  end

  @doc """
  Freezes the node started under `name` (SIGSTOP) for `ms` milliseconds, then lets it go on
  (SIGCONT): calls made meanwhile are answered late, as by a slow node. Returns at once.
  """
  def pause(name, ms) when is_atom(name) do
    case :global.whereis_name({__MODULE__, name}) do
      :undefined -> :not_running
      pid -> GenServer.call(pid, {:pause, ms}, 15_000)
    end
  end

  @doc "The node's TLS flags, from `ASH_GEN_SERVER_SSL_DIST_OPTFILE` (none when unset)."
  def tls_args do
    case System.get_env("ASH_GEN_SERVER_SSL_DIST_OPTFILE") do
      nil -> []
      "" -> []
      file -> ["--proto-dist", "inet_tls", "--ssl-dist-optfile", file]
    end
  end

  @impl true
  def init({bin, name, extra_args}) do
    Process.flag(:trap_exit, true)
    :global.register_name({__MODULE__, name}, self())
    log = Path.expand("rust_node.log", File.cwd!())

    args =
      ["start", "--name", to_string(name), "--cookie", to_string(Node.get_cookie())] ++
        ["--enable-fault-injection"] ++ tls_args() ++ extra_args

    # The node's stdout goes to the port; a background reader holds the port's stdin (fd 3, since
    # background jobs of a non-interactive shell get /dev/null) and kills the node on EOF. The
    # reader must not hold the port's stdout too, or the port would never see the shell exit.
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
        {:env, [{~c"RUST_LOG", String.to_charlist(System.get_env("RUST_LOG") || "info")}]}
      ])

    File.write!(log, "== #{name}\n", [:append])

    deadline = System.monotonic_time(:millisecond) + @ready_timeout
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
       deadline: deadline,
       exit: nil
     }}
  end

  @impl true
  def handle_call(:sigterm, from, state), do: handle_call({:signal, "-TERM"}, from, state)

  def handle_call({:signal, _}, _from, %{exit: {:exit_status, status}} = state),
    do: {:reply, {:already_exited, status}, state}

  def handle_call({:signal, signal}, _from, %{os_pid: os_pid, port: port} = state)
      when is_binary(os_pid) do
    System.cmd("kill", [signal, os_pid], stderr_to_stdout: true)

    status =
      receive do
        {^port, {:exit_status, status}} -> status
      after
        13_000 ->
          System.cmd("kill", ["-9", os_pid], stderr_to_stdout: true)
          :timeout
      end

    File.write!(state.log, "== #{state.name} exited with status #{inspect(status)}\n", [:append])
    {:reply, status, %{state | exit: {:exit_status, status}}}
  end

  def handle_call({:signal, _}, _from, state), do: {:reply, :not_running, state}

  def handle_call({:pause, ms}, _from, %{os_pid: os_pid, exit: nil} = state)
      when is_binary(os_pid) do
    System.cmd("kill", ["-STOP", os_pid], stderr_to_stdout: true)
    Process.send_after(self(), :resume, ms)
    {:reply, :ok, state}
  end

  def handle_call({:pause, _ms}, _from, state), do: {:reply, :not_running, state}

  def handle_call(:await_ready, from, state) do
    cond do
      state.ready? -> {:reply, :ok, state}
      state.exit -> {:reply, {:error, state.exit}, state}
      true -> {:noreply, %{state | waiting: [from | state.waiting]}}
    end
  end

  @impl true
  def handle_info({port, {:data, {_, "node_os_pid " <> pid}}}, %{port: port} = state) do
    {:noreply, %{state | os_pid: String.trim(pid)}}
  end

  def handle_info({port, {:data, {_, line}}}, %{port: port} = state) do
    File.write!(state.log, ["stdout: ", line, "\n"], [:append])
    stdout_ready? = state.stdout_ready? or String.starts_with?(line, "ready")
    {:noreply, %{state | stdout_ready?: stdout_ready?}}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    state = %{state | exit: {:exit_status, status}}
    Enum.each(state.waiting, &GenServer.reply(&1, {:error, state.exit}))
    {:noreply, %{state | waiting: []}}
  end

  def handle_info(:resume, %{os_pid: os_pid} = state) do
    System.cmd("kill", ["-CONT", os_pid], stderr_to_stdout: true)
    {:noreply, state}
  end

  def handle_info(:poll, %{ready?: false, exit: nil} = state) do
    cond do
      state.stdout_ready? and Node.ping(state.name) == :pong ->
        Enum.each(state.waiting, &GenServer.reply(&1, :ok))
        {:noreply, %{state | ready?: true, waiting: []}}

      System.monotonic_time(:millisecond) > state.deadline ->
        state = %{state | exit: :timeout}
        Enum.each(state.waiting, &GenServer.reply(&1, {:error, :timeout}))
        {:noreply, %{state | waiting: []}}

      true ->
        Process.send_after(self(), :poll, 50)
        {:noreply, state}
    end
  end

  def handle_info(_message, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    # Only a node still running when its owner goes (the VM is exiting): kill it.
    if state.os_pid && state.exit == nil,
      do: System.cmd("kill", ["-9", state.os_pid], stderr_to_stdout: true)

    if state.exit == nil, do: Port.close(state.port)
    :ok
  catch
    _, _ -> :ok
  end

  defp sh_escape(arg), do: "'" <> String.replace(to_string(arg), "'", "'\\''") <> "'"
end
