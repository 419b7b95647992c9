[
  inputs: ["*.exs", "lib/**/*.{ex,exs}"]
]
