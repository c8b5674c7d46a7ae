"""The synthetic simulator (being written)."""
