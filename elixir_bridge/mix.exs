defmodule AshGenServer.MixProject do
  use Mix.Project

  @version "0.1.0"

  # When ASH_GEN_SERVER_OFFLINE_DEPS names a folder of package sources (see
  # `shared/hex/README.md` in the project), build against it instead of Hex.
  @offline_dir System.get_env("ASH_GEN_SERVER_OFFLINE_DEPS")

  if @offline_dir do
    Code.require_file("offline_deps.exs", @offline_dir)
  end

  def project do
    [
      app: :ash_gen_server,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: deps(),
      description:
        "An Ash data layer whose records live as actors on a Rust node in the BEAM cluster.",
      docs: [main: "readme", extras: ["README.md"]]
    ]
  end

  def application do
    [
      extra_applications: [:logger],
      mod: {AshGenServer.Application, []}
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  if @offline_dir do
    defp deps, do: OfflineDeps.deps()
  else
    defp deps do
      [
        {:ash, "~> 3.30"},
        {:spark, "~> 2.7"},
        {:telemetry, "~> 1.0"}
      ]
    end
  end
end
