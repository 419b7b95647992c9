defmodule Bench.Application do
  @moduledoc false
  # On the driver node: the Registry and DynamicSupervisor of Bench.InProcessDataLayer.
  # (The baseline node does not start this application; it runs Bench.Baseline.main/0.)
  use Application

  @impl true
  def start(_type, _args) do
    Supervisor.start_link(Bench.InProcessDataLayer.children(),
      strategy: :one_for_one,
      name: Bench.Supervisor
    )
  end
end
