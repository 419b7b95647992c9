defmodule AshGenServer.ClientTest do
  # The end-to-end tests of the client (every request against a real node, and a VM without
  # Ash) are integration/ash_app/test/client_test.exs; these need no node.
  use ExUnit.Case, async: true

  alias AshGenServer.Client
  alias AshGenServer.Client.Error

  test "every public function has a doc and a spec" do
    {:docs_v1, _, :elixir, _, %{"en" => moduledoc}, _, docs} = Code.fetch_docs(Client)
    assert moduledoc =~ "for Elixir code without"
    {:ok, specs} = Code.Typespec.fetch_specs(Client)
    specced = MapSet.new(specs, fn {name_arity, _} -> name_arity end)

    functions = Client.__info__(:functions)
    assert length(functions) > 20

    for {name, arity} <- functions do
      doc =
        Enum.find_value(docs, fn
          {{:function, ^name, doc_arity}, _, _, doc, meta} ->
            defaults = Map.get(meta, :defaults, 0)
            if arity in (doc_arity - defaults)..doc_arity, do: doc

          _ ->
            nil
        end)

      assert match?(%{"en" => text} when byte_size(text) > 0, doc),
             "#{name}/#{arity} has no @doc"

      full_arity = Enum.find(arity..(arity + 3), &MapSet.member?(specced, {name, &1}))

      assert full_arity, "#{name}/#{arity} has no @spec"
    end
  end

  test "the client and its error call nothing of Ash, Spark or Splode" do
    for module <- [Client, Error] do
      {:ok, {^module, [imports: imports]}} =
        module |> :code.which() |> :beam_lib.chunks([:imports])

      called = imports |> Enum.map(fn {m, _f, _a} -> inspect(m) end) |> Enum.uniq()
      assert "AshGenServer.Transport" in called or module == Error

      for name <- called do
        refute String.starts_with?(name, ["Ash.", "Spark", "Splode", "AshGenServer.DataLayer"]),
               "#{inspect(module)} calls #{name}"
      end
    end
  end

  test "a node that cannot be reached is an error, not an exit" do
    assert {:error, %Error{reason: {:node_unavailable, :noconnection}, request: :get} = error} =
             Client.get(:user, %{id: 1}, node: :"unit_test_nowhere@127.0.0.1", timeout: 500)

    assert Exception.message(error) =~ "unit_test_nowhere@127.0.0.1"
  end

  test "error messages say what happened" do
    error = %Error{reason: :not_found, node: :n@h, request: :get, resource: :user}

    assert Exception.message(error) ==
             ~s(ash_gen_server node :n@h refused :get on :user: no record with that primary key)

    assert Exception.message(%Error{reason: {:bad_request, "bad sort"}, node: :n@h}) =~
             "bad request: bad sort"

    assert Exception.message(%Error{reason: {:node_unavailable, :timeout}, node: :n@h}) =~
             "the call timed out"

    assert Exception.message(%Error{reason: :no_node_configured, request: :ping}) =~
             "config :ash_gen_server, node:"
  end
end
