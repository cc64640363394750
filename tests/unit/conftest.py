"""Shared, session-scoped engine fixtures for the unit tests."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One model cache per test session: the tiny model is built once (seconds) and reused."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_model_dir(model_cache) -> Path:
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models.loading import materialise

    return materialise(ModelRegistry.load().get("tiny-random-llama"), model_cache)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: a second thread only adds synchronisation (and a CI box may be shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
