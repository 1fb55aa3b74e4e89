"""Helpers shared by the test tiers: generated model files and a real server process."""
