"""The OpenAI API at /v1 and /mimik-ai/openai/v1: request models, response shapes, routes."""
