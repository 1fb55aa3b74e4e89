"""Modelyard's server: the model store, fetching, inference engines, HTTP routes and CLI."""
