"""Modelyard's Kubernetes operator (kopf), imported as `modelyard.operator`."""
