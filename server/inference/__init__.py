"""The engines and the prompt work: llama.cpp (llama/) and onnxruntime engines, the model
manager that loads them, chat templates, grammars, tool calls, images, and the
dispatcher that turns typed requests into generations.

May import: shared and settings. Not Falcon, not registry (the store is passed in), not api.
Errors are its own (errors.py); the api layer gives them each family's shape.
"""
