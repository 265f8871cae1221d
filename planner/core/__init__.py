"""Pure, UI-free planning core: catalog, ggml types, llama.cpp rules, recipes, memory, accuracy."""
