[
  import_deps: [:ash, :spark, :ash_gen_server],
  inputs: ["{mix,.formatter}.exs", "{config,lib,test}/**/*.{ex,exs}"]
]
