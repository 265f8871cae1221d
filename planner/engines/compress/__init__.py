"""Quantizing Hugging Face checkpoints for vLLM and SGLang with llm-compressor (the `compress` extra).

- recipe.py: the recipe of a format (profiles/formats/*.toml [recipe]) for one model, as data;
- calibration.py: calibration text from a local file (text lines or JSONL with a text field), bounded;
- worker.py: the child process that loads the checkpoint, runs llm-compressor's oneshot and saves;
- checkpoint_files.py: the tensors of a written checkpoint (safetensors headers) against the plan;
- run.py: the parent side: the child, its progress, the temporary folder published atomically.
"""
