"""Test support: the local Hub, the tiny model, the hostile corpus, the golden answers."""
