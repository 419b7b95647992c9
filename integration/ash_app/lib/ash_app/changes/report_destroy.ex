defmodule AshApp.Changes.ReportDestroy do
  @moduledoc """
  After a destroy: records the destroy in `AshApp.ExpiryLog`, then sends
  `{:destroyed, resource, id, reason}` to the record's `owner` pid (`reason` is the expiry
  reason from the changeset context, or `nil` for an ordinary destroy). A record labelled `"slow"` takes 800 ms to
  destroy (to show that one slow expiry does not hold up the others).
  """
  use Ash.Resource.Change

  @impl true
  def change(changeset, _opts, _context) do
    Ash.Changeset.after_action(changeset, fn changeset, record ->
      reason = get_in(changeset.context, [:ash_gen_server, :expired])
      if Map.get(record, :label) == "slow", do: Process.sleep(800)
      resource = changeset.resource

      logged =
        AshApp.ExpiryLog
        |> Ash.Changeset.for_create(:create, %{
          resource: resource,
          record_id: record.id,
          reason: reason
        })
        |> Ash.create(authorize?: false)

      # Told once the log holds it: a test that ends on this message leaves no write behind
      # to land after the next test has cleared the log.
      if is_pid(record.owner), do: send(record.owner, {:destroyed, resource, record.id, reason})

      case logged do
        {:ok, _} -> {:ok, record}
        {:error, error} -> {:error, error}
      end
    end)
  end
end
