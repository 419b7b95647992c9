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

  @event_base 1_800_000_000_000_000

  @doc """
  An event of workload 7: `at` is a timestamp in microseconds, `id` seconds after a fixed
  instant scrambled over `0..n-1` (so ids and times are in different orders), plus a few
  microseconds; as a `DateTime` with `Bench.Data.event_at/2`.
  """
  def event_at_us(i, n), do: @event_base + rem(i * 7_919, n) * 1_000_000 + rem(i, 997)

  def event_at(i, n), do: DateTime.from_unix!(event_at_us(i, n), :microsecond)

  def event(i, n), do: %{id: i, at: event_at(i, n), name: "event-#{i}"}

  @doc "The cutoff of workload 7's filter `at > cutoff`: about half of the `n` events are later."
  def event_cutoff(n), do: DateTime.from_unix!(@event_base + div(n, 2) * 1_000_000, :microsecond)

  @doc "The ids of the events `first..last` on the page (`at > cutoff`, newest first)."
  def expected_event_page(n, offset, limit) do
    cutoff = DateTime.to_unix(event_cutoff(n), :microsecond)

    1..n
    |> Enum.map(&{event_at_us(&1, n), &1})
    |> Enum.filter(fn {at, _} -> at > cutoff end)
    |> Enum.sort(:desc)
    |> Enum.drop(offset)
    |> Enum.take(limit)
    |> Enum.map(&elem(&1, 1))
  end

  @doc """
  A post of workload 7's relationship load: `n` posts spread over `authors` authors
  (`author_id` 1..authors, round robin), `rank` scrambled over `0..n-1` (distinct when `n`
  and 7919 are coprime; ties are broken by id).
  """
  def post(i, n, authors),
    do: %{id: i, author_id: rem(i - 1, authors) + 1, rank: rem(i * 7_919, n), title: "post-#{i}"}

  @doc "Each author's ids of its `limit` posts of highest rank (then lowest id): `%{author_id => ids}`."
  def expected_top_posts(n, authors, limit) do
    1..n
    |> Enum.map(&post(&1, n, authors))
    |> Enum.group_by(& &1.author_id)
    |> Map.new(fn {author, posts} ->
      {author, posts |> Enum.sort_by(&{-&1.rank, &1.id}) |> Enum.take(limit) |> Enum.map(& &1.id)}
    end)
  end

  @doc "A human-readable form of the filter."
  def filter_text, do: ~s(age > #{@filter_age} and team == "#{@filter_team}")
end
