defmodule AshApp.MixProject do
  use Mix.Project

  # Build against the package sources in $ASH_GEN_SERVER_OFFLINE_DEPS (no Hex) when it is set.
  @offline_dir System.get_env("ASH_GEN_SERVER_OFFLINE_DEPS")

  if @offline_dir do
    Code.require_file("offline_deps.exs", @offline_dir)
  end

  def project do
    [
      app: :ash_app,
      version: "0.1.0",
      elixir: "~> 1.14",
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: false,
      deps: deps()
    ]
  end

  def application do
    [extra_applications: [:logger, :inets]]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  if @offline_dir do
    defp deps, do: OfflineDeps.deps() ++ [{:ash_gen_server, path: "../../elixir_bridge"}]
  else
    defp deps do
      [
        {:ash, "~> 3.30"},
        {:ash_gen_server, path: "../../elixir_bridge"}
      ]
    end
  end
end
