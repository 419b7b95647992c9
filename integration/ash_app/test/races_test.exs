defmodule AshApp.RacesTest do
  @moduledoc """
  Atomic claims under concurrency, through Ash: 64 updates racing from the same stale copy
  with an optimistic lock have exactly one winner; 64 upserts racing on one identity leave one
  record; upserts by identity racing updates that change that identity's value only ever land on
  a record that has the value, and leave no duplicates. Each race is repeated.
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

  test "upserts by identity racing updates that change it never land elsewhere (10 rounds)" do
    groups = 8

    for round <- 1..10 do
      authors =
        for g <- 1..groups do
          Author
          |> Ash.Changeset.for_create(:create, %{name: "o#{g}", email: "a#{round}_#{g}@x.io"})
          |> Ash.create!()
        end

      # per author: one update moves its email from a... to b..., seven upserts by the a... email
      results =
        race(groups * 8, fn n ->
          i = n - 1
          g = rem(i, groups) + 1
          author = Enum.at(authors, g - 1)

          if div(i, groups) == 0 do
            {:update, g,
             author
             |> Ash.Changeset.for_update(:update, %{email: "b#{round}_#{g}@x.io"})
             |> Ash.update()}
          else
            {:upsert, g,
             Author
             |> Ash.Changeset.for_create(:upsert_by_email, %{
               name: "u#{i}",
               email: author.email,
               score: i
             })
             |> Ash.create()}
          end
        end)

      for {author, g} <- Enum.with_index(authors, 1) do
        old = author.email
        new = "b#{round}_#{g}@x.io"
        mine = for {kind, ^g, result} <- results, do: {kind, result}
        assert [{:ok, moved}] = for({:update, result} <- mine, do: result)
        assert moved.email == new

        # every upsert got a record with the email it upserted by
        assert Enum.all?(mine, fn
                 {:update, _} -> true
                 {:upsert, result} -> match?({:ok, %Author{email: ^old}}, result)
               end),
               inspect(
                 for {:upsert, r} <- mine, not match?({:ok, %Author{email: ^old}}, r), do: r
               )

        # nothing changed the author after its email moved away; no email on two records
        stored = Ash.get!(Author, author.id)
        assert {stored.email, stored.name, stored.score} == {new, moved.name, moved.score}
        assert length(Author |> Ash.Query.filter(email == ^old) |> Ash.read!()) <= 1
        assert [%{id: id}] = Author |> Ash.Query.filter(email == ^new) |> Ash.read!()
        assert id == author.id
      end
    end
  end
end
