defmodule AshGenServer.Results do
  @moduledoc false
  # Helpers over `{:ok, value}` results, shared by the modules of the data layer.

  @doc """
  Maps `fun` over `list` while it returns `{:ok, value}`: `{:ok, values}` in order, or the
  first other return (`:error`, `{:error, reason}`...) as it is.
  """
  @spec map_ok(list, (term -> {:ok, term} | other)) :: {:ok, list} | other when other: term
  def map_ok(list, fun), do: map_ok(list, fun, [])

  defp map_ok([], _fun, acc), do: {:ok, Enum.reverse(acc)}

  defp map_ok([item | rest], fun, acc) do
    case fun.(item) do
      {:ok, value} -> map_ok(rest, fun, [value | acc])
      other -> other
    end
  end
end
