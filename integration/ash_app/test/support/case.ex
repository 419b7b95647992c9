defmodule AshApp.Case do
  @moduledoc """
  The case template of the end-to-end tests: runs them one at a time (they share one node),
  empties the test resources on the node before each test and imports the helpers.
  """
  use ExUnit.CaseTemplate

  @resources [
    AshApp.Author,
    AshApp.Post,
    AshApp.Tag,
    AshApp.Session,
    AshApp.Token,
    AshApp.ExpiryLog,
    AshApp.Fragile,
    AshApp.Everything,
    AshApp.Counter,
    AshApp.CasCounter,
    AshApp.Note,
    AshApp.Memo,
    AshApp.Visit,
    AshApp.Badge,
    AshApp.Seat,
    AshApp.Reading,
    AshApp.Secret,
    AshApp.Vault,
    AshApp.Topic,
    AshApp.PostTopic,
    AshApp.Parcel
  ]

  using do
    quote do
      import AshApp.Helpers
      require Ash.Query
      require Ash.Expr

      alias AshApp.{
        Author,
        Badge,
        CasCounter,
        Counter,
        Everything,
        ExpiryLog,
        Fragile,
        Memo,
        Note,
        Orphan,
        Parcel,
        Post,
        Reading,
        Secret,
        Vault,
        PostTopic,
        Seat,
        Session,
        Tag,
        Token,
        Topic,
        Visit
      }
    end
  end

  setup do
    AshApp.Helpers.clear!(@resources)
    :ok
  end
end
