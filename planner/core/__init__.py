"""The pure, UI-free planning core: a PlanRequest and its resolved inputs in, a Plan out.

It never detects hardware, reads a GGUF or a network, or imports a UI; its callers hand it values.

Layout, top down; in brackets what each part may import (each package's docstring says the same, and
tests/test_architecture.py checks it):

  build_plan.py   the entry point: sizing, memory, speed and accuracy meet here [everything below]
  accuracy/       accuracy tables and task scores, the scored view of a scheme, the recommendation and
                  the one ranking rule of deployments [base]
  serving/        what vLLM and SGLang share: Hugging Face checkpoints, memory arithmetic, speed, the plan
                  of a request's formats [base, ggml, devices, llamacpp.speed]
  llamacpp/       llama.cpp's type rules, recipes, sizing, memory, placement search, deployments, speed,
                  the plan of a request's schemes [base, ggml, devices]
  devices/        device profiles, the devices of a request [base, ggml]
  ggml/           ggml types, GGUF constants, split-file names [nothing of the core]
  base modules:   plan.py (PlanRequest and the computed Plan, as dataclasses), request_bounds.py (bounds
                  on a request), engine.py (the engine interface and ModelInput), catalog.py (models and
                  their hyper-parameters), data_files.py and paths.py (reading profiles/),
                  devices/host_kernels.py (the host's measured kernels, as values) [base]
"""
