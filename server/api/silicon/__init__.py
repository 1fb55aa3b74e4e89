"""Silicon Studio's engine API at /api/engine (its "Engine / Models API" document): request models, the service, routes."""
