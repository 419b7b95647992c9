import Config

# The Rust node the records live on (scripts/demo.sh starts it and sets DEMO_NODE).
config :ash_gen_server, node: String.to_atom(System.get_env("DEMO_NODE", "rust@127.0.0.1"))
