defmodule AshGenServer.Application do
  @moduledoc """
  The `:ash_gen_server` application: supervises `AshGenServer.ExpiryHandler` and the
  `AshGenServer.TaskSupervisor` it runs expiry destroys under.
  """
  use Application

  @impl true
  def start(_type, _args) do
    children = [
      {Task.Supervisor, name: AshGenServer.TaskSupervisor},
      AshGenServer.ExpiryHandler
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: AshGenServer.Supervisor)
  end
end
