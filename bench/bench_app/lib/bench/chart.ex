defmodule Bench.Chart do
  @moduledoc """
  Draws the ratios Rust / BEAM of every row that has a target as horizontal bars on a log scale,
  with each row's target as a black tick and parity (1×) dashed: a plain SVG, written here with
  no library.

  `main/1` redraws a chart from a results JSON file:
  `mix run --no-start -e 'Bench.Chart.main(System.argv())' -- results.json out.svg`.
  """

  @width 1040
  @label_w 430
  @plot_x0 450
  @plot_x1 900
  @row_h 30
  @top 78

  def main([json_path, svg_path]) do
    doc = json_path |> File.read!() |> Jason.decode!(keys: :atoms)
    File.write!(svg_path, svg(doc))
  end

  @doc "The SVG text for a results document (atom keys, as built by `Bench.Driver`)."
  def svg(doc) do
    bars =
      for row <- doc.rows, row[:target], row[:result] do
        ratio =
          case row.table do
            "latency" -> Map.fetch!(row.ratio, String.to_atom(row.target.metric))
            _ -> row.ratio
          end

        %{
          label: row.label <> metric_name(row),
          ratio: ratio,
          target: row.target.value,
          op: row.target.op,
          pass?: row.result == "PASS",
          counted?: row[:counted] != false
        }
      end

    values =
      Enum.flat_map(bars, &[&1.ratio, &1.target]) |> Enum.filter(&(is_number(&1) and &1 > 0))

    lo = :math.pow(10, floor(:math.log10(Enum.min([1.0 | values]) / 1.5)))
    hi = :math.pow(10, ceil(:math.log10(Enum.max([1.0 | values]) * 1.5)))
    lo = max(lo, 1.0e-5)
    x = fn v -> scale(max(v, lo), lo, hi) end
    height = @top + length(bars) * @row_h + 70

    decades =
      for e <- round(:math.log10(lo))..round(:math.log10(hi)) do
        v = :math.pow(10, e)
        xv = x.(v)

        [
          ~s|<line x1="#{f(xv)}" y1="#{@top - 8}" x2="#{f(xv)}" y2="#{height - 58}" stroke="#ddd"/>|,
          ~s|<text x="#{f(xv)}" y="#{height - 42}" text-anchor="middle" class="axis">#{ratio_text(v)}</text>|
        ]
      end

    rows =
      bars
      |> Enum.with_index()
      |> Enum.map(fn {bar, i} ->
        y = @top + i * @row_h
        color = if bar.pass?, do: "#2e9e44", else: "#d0453a"
        opacity = if bar.counted?, do: "1", else: "0.45"
        bx = x.(bar.ratio || lo)
        tx = x.(bar.target)

        [
          ~s|<text x="#{@label_w}" y="#{y + 15}" text-anchor="end" class="label">#{esc(bar.label)}</text>|,
          ~s|<rect x="#{@plot_x0}" y="#{y + 3}" width="#{f(max(bx - @plot_x0, 1))}" height="16" fill="#{color}" fill-opacity="#{opacity}"/>|,
          ~s|<line x1="#{f(tx)}" y1="#{y}" x2="#{f(tx)}" y2="#{y + 22}" stroke="#111" stroke-width="2.5"/>|,
          ~s|<text x="#{f(max(bx, tx) + 6)}" y="#{y + 15}" class="value">#{ratio_text(bar.ratio)} (#{if bar.op == "<=", do: "≤", else: "≥"} #{ratio_text(bar.target)})</text>|
        ]
      end)

    parity = x.(1.0)

    """
    <svg xmlns="http://www.w3.org/2000/svg" width="#{@width}" height="#{height}" viewBox="0 0 #{@width} #{height}" font-family="Helvetica, Arial, sans-serif">
    <style>
      .title { font-size: 17px; font-weight: bold; }
      .sub { font-size: 12px; fill: #444; }
      .label { font-size: 12.5px; fill: #222; }
      .value { font-size: 12px; fill: #222; }
      .axis { font-size: 11px; fill: #555; }
    </style>
    <rect width="100%" height="100%" fill="white"/>
    <text x="20" y="26" class="title">ash_gen_server: Rust node / BEAM baseline (log scale)</text>
    <text x="20" y="46" class="sub">#{esc(subtitle(doc))}</text>
    <text x="20" y="62" class="sub">Green: target met, red: missed; black tick: the target. Latency, memory and time: lower is better; ops/s: higher is better. Pale bars are extra rows.</text>
    #{IO.iodata_to_binary(decades)}
    <line x1="#{f(parity)}" y1="#{@top - 8}" x2="#{f(parity)}" y2="#{height - 58}" stroke="#888" stroke-dasharray="4 3"/>
    #{IO.iodata_to_binary(Enum.intersperse(rows, "\n"))}
    <text x="#{f((@plot_x0 + @plot_x1) / 2)}" y="#{height - 20}" text-anchor="middle" class="axis">Rust / BEAM (1M row: per-record time at 1M / at 10k; workload 7: in the node / the fallback)</text>
    </svg>
    """
  end

  defp subtitle(doc) do
    m = doc.machine

    "#{doc.mode_text}, #{doc.timestamp}; #{m[:nproc]} cores, #{m[:cpu_model]}; OTP #{m[:otp]}, Elixir #{m[:elixir]}"
  end

  defp metric_name(%{table: "latency", target: %{metric: "p50_us"}}), do: " — p50"
  defp metric_name(%{table: "latency", target: %{metric: "ops_s"}}), do: " — ops/s"
  defp metric_name(%{table: "capacity", metric: "rate"}), do: " — rate"
  defp metric_name(%{table: "capacity"}), do: " — node CPU/op"
  defp metric_name(_), do: ""

  defp scale(v, lo, hi),
    do:
      @plot_x0 +
        (:math.log10(v) - :math.log10(lo)) / (:math.log10(hi) - :math.log10(lo)) *
          (@plot_x1 - @plot_x0)

  defp ratio_text(nil), do: "—"
  defp ratio_text(v), do: Bench.Report.fmt_ratio(v)

  defp f(v), do: :erlang.float_to_binary(v / 1, decimals: 1)

  defp esc(text) do
    text
    |> String.replace("&", "&amp;")
    |> String.replace("<", "&lt;")
    |> String.replace(">", "&gt;")
    |> String.replace("\"", "&quot;")
  end
end
