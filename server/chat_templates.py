"""Chat template hints a model may name (seed 000's list; llama.cpp knows each by this name)."""
from __future__ import annotations

KNOWN_HINTS = (
    "chatml",
    "llama2",
    "llama3",
    "phi3",
    "mistral-v1",
    "mistral-v3",
    "mistral-v7",
    "gemma",
    "deepseek",
    "deepseek2",
    "deepseek3",
    "command-r",
    "falcon3",
    "zephyr",
    "vicuna",
    "vicuna-orca",
    "openchat",
)
