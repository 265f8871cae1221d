"""GGUF files: header-only reading (header.py), models from GGUF headers (model.py), and writing
small random-weight models and full-scale sparse header files (writer.py)."""
