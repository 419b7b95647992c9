import Config

if config_env() == :test do
  # The unit tests never reach a node; resources without a DSL `node` use this one.
  config :ash_gen_server, node: :"unit_test_nowhere@127.0.0.1", call_timeout: 500
  config :ash, disable_async?: true
end

if config_env() == :test do
  config :logger, level: :warning
end
