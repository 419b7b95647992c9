defmodule AshSuite.Formatter do
  @moduledoc """
  An ExUnit formatter that writes one JSON object per finished test to the file named by
  `$ASH_SUITE_RESULTS`, for `report.exs`:

      {"id": "Ash.Test.Actions.CreateTest :: test simple creates ...",
       "file": "test/actions/create_test.exs:123", "state": "passed" | "failed" | "invalid" |
       "skipped" | "excluded", "time_us": 1234, "error": "first lines of the failure"}

  A test's id (`id/1`) is its module and its ExUnit name (`"test " <> describe <> " " <> name`),
  unique within a run and the same in both modes. The last line is `{"suite_finished": true, ...}`:
  a results file without it comes from a run that did not finish.
  """
  use GenServer

  @error_lines 30

  @impl true
  def init(_opts) do
    path = System.fetch_env!("ASH_SUITE_RESULTS")
    File.mkdir_p!(Path.dirname(path))
    {:ok, io} = File.open(path, [:write, :utf8])
    {:ok, %{io: io, cwd: File.cwd!()}}
  end

  @impl true
  def handle_cast({:test_finished, %ExUnit.Test{} = test}, state) do
    {state_name, error} = outcome(test)

    line = %{
      id: id(test),
      file: "#{Path.relative_to(test.tags[:file] || "", state.cwd)}:#{test.tags[:line]}",
      state: state_name,
      time_us: test.time,
      error: error
    }

    IO.write(state.io, [Jason.encode_to_iodata!(line), "\n"])
    {:noreply, state}
  end

  def handle_cast({:suite_finished, times}, state) do
    line = %{suite_finished: true, run_us: times[:run], load_us: times[:load]}
    IO.write(state.io, [Jason.encode_to_iodata!(line), "\n"])
    File.close(state.io)
    {:noreply, state}
  end

  def handle_cast(_event, state), do: {:noreply, state}

  @doc """
  The id of a test: `Module :: name` on one line. A name that starts or ends with whitespace or
  holds a line break is written quoted (`inspect/1`), so the id survives editors that trim lines
  (two tests of the suite differ only by a trailing space).
  """
  def id(%ExUnit.Test{module: module, name: name}) do
    name = to_string(name)

    if String.trim(name) != name or String.contains?(name, ["\n", "\r"]),
      do: inspect(module) <> " :: " <> inspect(name),
      else: inspect(module) <> " :: " <> name
  end

  defp outcome(%ExUnit.Test{state: nil}), do: {"passed", nil}
  defp outcome(%ExUnit.Test{state: {:skipped, _}}), do: {"skipped", nil}
  defp outcome(%ExUnit.Test{state: {:excluded, _}}), do: {"excluded", nil}

  defp outcome(%ExUnit.Test{state: {:invalid, module}}),
    do: {"invalid", "setup_all of #{inspect(module)} failed"}

  defp outcome(%ExUnit.Test{state: {:failed, failures}} = test) do
    text =
      ExUnit.Formatter.format_test_failure(test, failures, 1, 100, fn _, msg -> msg end)
      |> String.split("\n")
      |> Enum.drop(1)
      |> Enum.map(&String.trim_trailing/1)
      |> Enum.reject(&(&1 == ""))
      |> Enum.take(@error_lines)
      |> Enum.join("\n")

    {"failed", text}
  rescue
    _ -> {"failed", inspect(failures_of(test), limit: 50, printable_limit: 2_000)}
  end

  defp failures_of(%ExUnit.Test{state: {:failed, failures}}), do: failures
end
