"""llama.cpp through llama-cpp-python: the model, the scheduler (continuous batching on one
context), the per-request streams, the embedder and the vision projector."""
