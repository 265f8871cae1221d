"""SGLang: its memory model (memory.py) and its launch commands (engine.py, ENGINE_IMPL)."""
