"""Clients that nobody here wrote, driven unchanged from the tests."""
