defmodule Bench.Data do
  @moduledoc """
  The benchmark's records, the same on every side. Deterministic from the id:

      %{id: i, name: "person-i", age: 0..99, team: "team-0".."team-59", score: 0}

  The filter `age > 40 and team == "team-7"` keeps about 59 % × 1/60 ≈ 1 % of them.
  (No Ash here: the baseline node uses this module too.)
  """

  @filter_age 40
  @filter_team "team-7"

  def person(i) do
    %{
      id: i,
      name: "person-#{i}",
      age: :erlang.phash2({i, :age}, 100),
      team: "team-#{:erlang.phash2({i, :team}, 60)}",
      score: 0
    }
  end

  def filter_age, do: @filter_age
  def filter_team, do: @filter_team

  @doc "The filter in the node's protocol (PROTOCOL.md \"Filter expressions\")."
  def node_filter, do: {:and, {:gt, :age, @filter_age}, {:eq, :team, @filter_team}}

  @doc "The filter as data for `Bench.Baseline.scan/2`."
  def baseline_filter, do: {:age_gt_team_eq, @filter_age, @filter_team}

  @doc "How many of ids `first..last` match the filter (to check every side's answer)."
  def expected_matches(first, last) do
    Enum.count(first..last, fn i ->
      p = person(i)
      p.age > @filter_age and p.team == @filter_team
    end)
  end

  @doc "A human-readable form of the filter."
  def filter_text, do: ~s(age > #{@filter_age} and team == "#{@filter_team}")
end
