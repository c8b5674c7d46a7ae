"""JUMP-CP preparation (being written)."""
