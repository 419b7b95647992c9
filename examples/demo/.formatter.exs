[
  import_deps: [:ash, :ash_gen_server],
  inputs: ["{mix,.formatter}.exs", "{config,lib}/**/*.{ex,exs}", "demo.exs"]
]
