import Config

# The Rust node's name is only known at run time: Bench.Driver sets
# `config :ash_gen_server, node: ...` before the first Ash action.
config :ash_gen_server, call_timeout: 60_000
config :ash_gen_server_bench, ash_domains: [Bench.Domain]
config :ash, disable_async?: true
config :logger, level: :warning
