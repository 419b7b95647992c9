defmodule AshSuite.Clear do
  @moduledoc """
  Added to every test module of the `ours` suite, right after `use ExUnit.Case` (on the same
  line, so that line numbers do not move): empties the node before the module's `setup_all`
  and before each test, ahead of the module's own callbacks. See `AshSuite.Node`.
  """
  defmacro __using__(_opts) do
    quote do
      setup_all do
        AshSuite.Node.module_started()
      end

      setup do
        AshSuite.Node.before_test()
      end
    end
  end
end
