spark_locals_without_parens = [
  inactivity_timeout: 1,
  maximum_lifetime: 1,
  node: 1,
  call_timeout: 1,
  max_restarts: 1,
  max_seconds: 1,
  expiry_grace: 1,
  atomics_in_node?: 1
]

[
  import_deps: [:ash, :spark],
  inputs: ["{mix,.formatter}.exs", "{config,lib,test}/**/*.{ex,exs}"],
  locals_without_parens: spark_locals_without_parens,
  export: [locals_without_parens: spark_locals_without_parens]
]
