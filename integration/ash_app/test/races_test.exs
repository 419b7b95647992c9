defmodule AshApp.RacesTest do
  @moduledoc """
  Atomic claims under concurrency, through Ash: 64 updates racing from the same stale copy
  with an optimistic lock have exactly one winner; 64 upserts racing on one identity leave one
  record. Each race is repeated.
  """
  use AshApp.Case, async: false

  alias AshApp.Author

  defp race(n, fun) do
    1..n
    |> Task.async_stream(fun, max_concurrency: n, timeout: 60_000)
    |> Enum.map(fn {:ok, result} -> result end)
  end

  test "64 optimistically locked updates from one copy: exactly one wins (10 rounds)" do
    for round <- 1..10 do
      author =
        Author
        |> Ash.Changeset.for_create(:create, %{name: "r#{round}", score: 0})
        |> Ash.create!()

      results =
        race(64, fn i ->
          author |> Ash.Changeset.for_update(:update_locked, %{score: i}) |> Ash.update()
        end)

      winners = for {:ok, a} <- results, do: a
      assert length(winners) == 1

      assert Enum.all?(results -- Enum.map(winners, &{:ok, &1}), fn
               {:error, %Ash.Error.Invalid{errors: [%Ash.Error.Changes.StaleRecord{}]}} -> true
               _ -> false
             end)

      [winner] = winners
      stored = Ash.get!(Author, author.id)
      assert stored.score == winner.score
      assert stored.version == author.version + 1
    end
  end

  test "64 upserts racing on one identity leave one record (10 rounds)" do
    for round <- 1..10 do
      email = "race#{round}@x.io"

      results =
        race(64, fn i ->
          Author
          |> Ash.Changeset.for_create(:upsert_by_email, %{name: "n#{i}", email: email, score: i})
          |> Ash.create()
        end)

      assert Enum.all?(results, &match?({:ok, %Author{email: ^email}}, &1))
      assert [_one] = Author |> Ash.Query.filter(email == ^email) |> Ash.read!()
    end
  end
end
