defmodule AshApp do
  @moduledoc """
  A small Ash 3 application whose resources all live on the Rust `ash-gen-server` node through
  `AshGenServer.DataLayer`; it exists to be exercised end to end by this project's test suite.
  """
end
