import Config

# The node name is unique per test run; test/test_helper.exs sets
# `config :ash_gen_server, node: ...` once it has started the Rust node.
config :ash_gen_server, call_timeout: 5_000

config :ash_app, ash_domains: [AshApp.Domain]
config :ash, disable_async?: false
config :logger, level: :warning
