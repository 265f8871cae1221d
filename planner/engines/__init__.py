"""Serving engines: build, start and check the commands that run a plan (llama.cpp, vLLM, SGLang)."""
