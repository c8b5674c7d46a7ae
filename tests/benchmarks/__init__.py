"""The performance suite (opt-in; see conftest.py)."""
