defmodule Demo.Library do
  @moduledoc "The demo's Ash domain: books kept on the Rust node."
  use Ash.Domain

  resources do
    resource Demo.Book
  end
end
