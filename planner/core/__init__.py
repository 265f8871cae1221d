"""The pure, UI-free planning core: a PlanRequest and its resolved inputs in, a Plan out.

It never detects hardware, reads a GGUF or a network, or imports a UI; its callers hand it values.

Layout (imports point down this list; tests/test_architecture.py checks it):

  build_plan.py   the entry point: sizing, memory, speed and accuracy meet here (imports everything below)
  accuracy/       accuracy tables, task scores, the recommendation (ranks plans; never sizes them)
  serving/        Hugging Face checkpoints, vLLM/SGLang memory and speed, the plan of a request's formats
  llamacpp/       llama.cpp's type rules, recipes, sizing, memory, placement search, deployments, speed,
                  the plan of a request's schemes
  devices/        device profiles, the devices of a request, the host's measured kernels
  ggml/           ggml types and GGUF constants (imports nothing of the core)
  base modules:   plan.py (PlanRequest and the computed Plan, as dataclasses), request_bounds.py (bounds
                  on a request), engine.py (the engine interface and ModelInput: annotations only),
                  catalog.py (models and their hyper-parameters), data_files.py and paths.py (reading
                  profiles/), devices/host_kernels.py (the host's measured kernels, as values)
"""
