"""Model loading (torch). Resolve names with rlhf_engine.model_registry first."""
