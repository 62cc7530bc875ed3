"""The classifiers. Serving imports no torch: `solver` (how an ODE body is integrated, how a solve
fails) and `architecture` (what a card says about its network) are plain Python, `artefacts` reads
weights with safetensors' numpy loader, `predictors` run onnxruntime graphs and the compiled solves
of `fastode`, `registry` loads and warms them. `networks` holds the torch nn.Modules that training
builds and the tests compare against (the training extra)."""
