"""Silicon Studio's engine API at /api/engine (seed 001): request models, the service, routes."""
