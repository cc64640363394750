"""The HTTP layer: only the API process imports it (the workers never do; tests/unit/test_layers.py)."""
