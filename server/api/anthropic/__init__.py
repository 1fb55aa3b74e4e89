"""The Anthropic Messages API at /v1/messages: request models, response shapes, routes."""
