"""Ollama's API at /api (and GET/HEAD /): generate, chat, embeddings and the model list,
on the same engines and store as the other families."""
