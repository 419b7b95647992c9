import Config

config :logger, level: :warning
config :demo, ash_domains: [Demo.Library]
