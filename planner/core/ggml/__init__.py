"""ggml's tensor types and the GGUF format's constants: type names, block sizes and exact row bytes
(gguf.GGML_QUANT_SIZES), the gguf package's enums loaded fast, the file names of split models.

The bottom of the core: imports nothing of planner.core (only planner.errors and the gguf package).
"""
