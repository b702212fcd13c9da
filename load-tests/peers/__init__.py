"""The servers under test: each peer's app and how to start it (see launch.py)."""
