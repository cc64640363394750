"""The operator's registry file: what it may say, and what it refuses."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from rlhf_engine.model_registry import ModelRegistry, UnknownModel


def write(tmp_path, models: dict, suffix=".json"):
    path = tmp_path / f"registry{suffix}"
    path.write_text(json.dumps({"models": models}))  # JSON is valid YAML too
    return path


def test_operator_entries_join_the_builtins_and_name_their_queues(tmp_path):
    registry = ModelRegistry.load(write(tmp_path, {
        "llama-8b": {"path": "/models/llama", "queue": "rlhf-a100"},
        "qwen-0.5b": {"path": "/models/qwen", "queue": "rlhf-l4"},
        "rm": {"path": "/models/rm", "kind": "reward_model"}}, suffix=".yaml"))
    assert {"llama-8b", "qwen-0.5b", "tiny-random-llama"} <= set(registry.names("causal_lm"))
    assert registry.names("reward_model") == ["rm"]
    assert registry.get("llama-8b").queue == "rlhf-a100"
    assert registry.get("tiny-random-llama").queue is None  # the API's RLHF_QUEUE
    assert registry.queues() == ["rlhf-a100", "rlhf-l4"]
    with pytest.raises(UnknownModel):
        registry.get("/models/llama")  # a path is not a name


@pytest.mark.parametrize("entry", [{"path": "/m", "queue": "has space"}, {"path": "/m", "queue": ""},
                                   {"path": "/m", "gpu": "a100"}, {"path": "/m", "kind": "vision"}])
def test_a_malformed_entry_is_refused_at_load(tmp_path, entry):
    with pytest.raises(ValidationError):
        ModelRegistry.load(write(tmp_path, {"x": entry}))
