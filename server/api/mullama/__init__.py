"""The Mullama daemon's API (its documentation's "REST API" page): model management, system status, the defaults catalogue."""
