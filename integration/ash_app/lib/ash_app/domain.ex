defmodule AshApp.Domain do
  @moduledoc "The domain of the end-to-end test application."
  use Ash.Domain

  resources do
    resource AshApp.Author
    resource AshApp.Post
    resource AshApp.Tag
    resource AshApp.Session
    resource AshApp.Token
    resource AshApp.ExpiryLog
    resource AshApp.Fragile
    resource AshApp.Orphan
    resource AshApp.Everything
    resource AshApp.Counter
    resource AshApp.CasCounter
    resource AshApp.Note
    resource AshApp.Memo
    resource AshApp.Visit
    resource AshApp.Badge
    resource AshApp.Seat
    resource AshApp.Reading
    resource AshApp.MeterReading
    resource AshApp.Secret
    resource AshApp.Vault
    resource AshApp.Topic
    resource AshApp.PostTopic
    resource AshApp.Parcel
  end
end
