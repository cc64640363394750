"""rlhf_engine: the training engine behind the service, usable on its own.

Importing the package is cheap: the heavy modules (torch, transformers, peft) load only when a
training entry point is called. `rlhf_engine.spec`, `rlhf_engine.model_registry` and
`rlhf_engine.data.formats` are pure Python and safe for the API process.
"""

__version__ = "0.1.0"
