"""The HTTP API. Never imports torch, transformers or peft (tests/unit/test_layers.py checks)."""
