defmodule AshApp.Metrics do
  @moduledoc """
  Scrapes the Rust node's Prometheus endpoint (`--metrics-addr`, see docs/OPERATIONS.md
  "Metrics") over real HTTP with `:httpc`, and reads the samples of the text format.
  """

  @doc "A TCP port free on 127.0.0.1 right now (for `--metrics-addr`)."
  def free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1}, reuseaddr: true)
    {:ok, port} = :inet.port(socket)
    :ok = :gen_tcp.close(socket)
    port
  end

  @doc "The URL `test_helper.exs` gave the node."
  def url, do: Application.fetch_env!(:ash_app, :metrics_url)

  @doc """
  One scrape: `%{{metric_name, %{label => value}} => number}` for every sample line (histogram
  buckets included, under their `_bucket`/`_sum`/`_count` names). Fails unless the endpoint
  answers 200 with Prometheus text.
  """
  def scrape!(url \\ url()) do
    {:ok, _} = Application.ensure_all_started(:inets)

    {:ok, {{_, 200, _}, headers, body}} =
      :httpc.request(:get, {String.to_charlist(url), []}, [timeout: 5_000], [])

    content_type = for {~c"content-type", value} <- headers, do: List.to_string(value)
    true = Enum.any?(content_type, &String.starts_with?(&1, "text/plain"))
    parse(List.to_string(body))
  end

  @doc "The samples of Prometheus text `body` (see `scrape!/1`)."
  def parse(body) do
    for line <- String.split(body, "\n"),
        line = String.trim(line),
        line != "" and not String.starts_with?(line, "#"),
        into: %{} do
      case Regex.run(~r/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/, line) do
        [_, name, labels, value] -> {{name, labels(labels)}, number(value)}
        [_, name, value] -> {{name, %{}}, number(value)}
        nil -> raise "not a Prometheus sample line: #{inspect(line)}"
      end
    end
  end

  defp labels(labels) do
    ~r/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/
    |> Regex.scan(labels, capture: :all_but_first)
    |> Map.new(fn [key, value] -> {key, unescape(value)} end)
  end

  defp unescape(value),
    do:
      value
      |> String.replace("\\\"", "\"")
      |> String.replace("\\n", "\n")
      |> String.replace("\\\\", "\\")

  defp number("+Inf"), do: :infinity
  defp number("-Inf"), do: :neg_infinity
  defp number("NaN"), do: :nan

  defp number(text) do
    case Float.parse(text) do
      {value, ""} -> value
      _ -> raise "not a Prometheus sample value: #{inspect(text)}"
    end
  end

  @doc "The value of `name` with exactly `labels` in a scrape (0 when the series is absent)."
  def value(scrape, name, labels \\ %{}) do
    Map.get(scrape, {name, Map.new(labels, fn {k, v} -> {to_string(k), to_string(v)} end)}, 0)
  end
end
