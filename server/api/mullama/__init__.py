"""The Mullama daemon's API (seed 002): model management, system status, the defaults catalogue."""
