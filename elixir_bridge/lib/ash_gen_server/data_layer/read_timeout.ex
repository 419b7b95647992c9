defmodule AshGenServer.DataLayer.ReadTimeout do
  @moduledoc """
  Carries a read's `:timeout` to the data layer. Ash 3 enforces the timeout itself (the read
  runs in a task it stops when the time is up) but hands the data layer no timeout, so each
  node call would wait the resource's `call_timeout` (5 s by default) and cut a longer read
  short. This preparation, added to every resource of the data layer (`Transformer`), puts
  the read's timeout in the query context (`%{ash_gen_server: %{read_timeout: ms}}`), where
  `AshGenServer.Query.read_timeout/1` finds it for the node calls.

  It sees the timeout given when the query is built for its action (`Ash.read(resource,
  timeout: ...)`, `Ash.get(..., timeout: ...)`, `Ash.Query.for_read(..., timeout: ...)`); a
  timeout given to `Ash.read/2` for a query already built for the action comes too late for
  it (the read action's own `timeout` is still used).
  """
  use Ash.Resource.Preparation

  @impl true
  def prepare(%{timeout: nil} = query, _opts, _context), do: query

  def prepare(query, _opts, _context),
    do: Ash.Query.set_context(query, %{ash_gen_server: %{read_timeout: query.timeout}})

  defmodule Transformer do
    @moduledoc "Adds `AshGenServer.DataLayer.ReadTimeout` to the resource's global preparations."
    use Spark.Dsl.Transformer

    @impl true
    def transform(dsl_state) do
      preparation = %Ash.Resource.Preparation{
        preparation: {AshGenServer.DataLayer.ReadTimeout, []},
        on: [:read]
      }

      {:ok, Spark.Dsl.Transformer.add_entity(dsl_state, [:preparations], preparation)}
    end
  end
end
