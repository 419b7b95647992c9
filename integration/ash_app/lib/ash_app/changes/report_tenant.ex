defmodule AshApp.Changes.ReportTenant do
  @moduledoc """
  After a destroy: sends `{:destroyed_in_tenant, resource, id, reason, tenant}` to the record's
  `owner` pid, `tenant` being the changeset's and `reason` the expiry reason from the changeset
  context (`nil` for an ordinary destroy). Atomic: the message is sent from an after-action hook,
  so the destroy itself stays one request by primary key.
  """
  use Ash.Resource.Change

  @impl true
  def change(changeset, _opts, _context), do: report(changeset)

  @impl true
  def atomic(changeset, _opts, _context), do: {:ok, report(changeset)}

  defp report(changeset) do
    Ash.Changeset.after_action(changeset, fn changeset, record ->
      reason = get_in(changeset.context, [:ash_gen_server, :expired])

      if is_pid(record.owner),
        do:
          send(
            record.owner,
            {:destroyed_in_tenant, changeset.resource, record.id, reason, changeset.tenant}
          )

      {:ok, record}
    end)
  end
end
