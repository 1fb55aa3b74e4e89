"""modelyard.server: the model store and inference server (`modelyard serve`, `modelyard fetch`).

Layers, from the top (import-linter contracts in pyproject.toml enforce them):
- app, cli, gunicorn_app, fetch_cli: wiring and entry points;
- api: the Falcon resources of each API family;
- http: HTTP plumbing shared by the families (auth, bodies, errors, multipart, SSE, JSON);
- inference and registry: the engines, and the store on disk with its downloads.
  Neither imports Falcon, nor the other;
- settings, then shared: the facts the server and the operator share.
"""
