"""The built-in inference server's models: registry bases kept loaded, LoRA adapters on them.

A base is materialised and loaded the first time it is asked for and then stays. An adapter is
registered by name (its `ft:` name) and path, as with vLLM's runtime LoRA loading; its weights sit
in the base's peft model as one named adapter among several, switched per request. At most
`max_loaded_adapters` per base stay in memory: the least recently used one is dropped and loaded
again from its directory when it is next asked for (vLLM's --max-cpu-loras behaves the same).

Generation is the engine's: the chat template (rlhf_engine/data/tokenize.py) and the sampler the
online methods use (rlhf_engine/rollout/hf_backend.py: greedy at temperature 0, otherwise one seeded
stream per choice, so a request with a seed is reproducible). One request at a time per base: the
active adapter is state of the shared model.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from rlhf_engine.data.examples import Message
from rlhf_engine.data.tokenize import render_prompt
from rlhf_engine.model_registry import ModelRegistry, UnknownModel
from rlhf_engine.models.loading import load_causal_lm, load_tokenizer, materialise
from rlhf_engine.precision import default_device
from rlhf_engine.rollout.generation import stop_ids
from rlhf_engine.rollout.hf_backend import HFBackend

# When a request sets no token limit: vLLM would allow the rest of the context, which on a CPU
# means minutes for one answer.
DEFAULT_MAX_TOKENS = 256


class UnknownName(LookupError):
    """A model name that is neither a registry base nor a registered adapter (the server's 404)."""


class BadRequest(ValueError):
    """A request this server cannot honour as given (the server's 400)."""


@dataclass
class Reply:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"
    completion_tokens: int
    pieces: list[str]  # `text` cut at token boundaries, for streaming


@dataclass
class Generation:
    replies: list[Reply]
    prompt_tokens: int


@dataclass
class _Base:
    model: object  # a transformers model; a peft model once an adapter is loaded on it
    tokenizer: object
    stop_ids: list[int]
    context: int
    slots: OrderedDict[str, str] = field(default_factory=OrderedDict)  # lora name -> peft adapter name, LRU first
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class _Adapter:
    path: Path
    base: str


class ModelPool:
    def __init__(self, registry: ModelRegistry, cache_dir: Path, artifacts_root: Path, *,
                 device: str | None = None, max_loaded_adapters: int = 8):
        self.registry, self.cache_dir = registry, cache_dir
        self.artifacts_root = Path(artifacts_root).resolve()
        self.device = device or default_device()
        self.max_loaded_adapters = max_loaded_adapters
        self._bases: dict[str, _Base] = {}
        self._adapters: dict[str, _Adapter] = {}
        self._loading = threading.Lock()
        self._slot_ids = itertools.count()  # peft adapter names are module keys: ours, never user text

    # ---- names -----------------------------------------------------------------------------

    def names(self) -> list[tuple[str, str | None]]:
        """(name, parent base or None) of every model this server answers for right now."""
        return [*((b, None) for b in self._bases), *((n, a.base) for n, a in self._adapters.items())]

    def base(self, name: str) -> _Base:
        with self._loading:
            if name not in self._bases:
                try:
                    entry = self.registry.get(name)
                except UnknownModel:
                    raise UnknownName(name) from None
                if entry.kind != "causal_lm":
                    raise BadRequest(f"model {name!r} is a {entry.kind}, not a chat model")
                path = materialise(entry, self.cache_dir)
                model = load_causal_lm(path, device=self.device).eval()
                tokenizer = load_tokenizer(path)
                context = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
                self._bases[name] = _Base(model, tokenizer, stop_ids(tokenizer), int(context))
            return self._bases[name]

    def register_adapter(self, name: str, path: str, base_model: str) -> None:
        """Remember `name` -> (path, base) and load it now, so a bad adapter fails here, not in a chat.
        Registering the same name and path again is a no-op."""
        adapter_dir = Path(path).resolve()
        # Only what the service wrote: the API sends paths under RLHF_ARTIFACTS_DIR.
        if self.artifacts_root not in adapter_dir.parents or not (adapter_dir / "adapter_config.json").is_file():
            raise BadRequest(f"no LoRA adapter at {path!r} under the artifacts directory")
        known = self._adapters.get(name)
        if known is not None:
            if known.path != adapter_dir:
                raise BadRequest(f"the lora adapter {name!r} has already been loaded from another path")
            return
        base = self.base(base_model)
        adapter = _Adapter(adapter_dir, base_model)
        with base.lock:
            self._activate(base, name, adapter)
        self._adapters[name] = adapter

    def unregister_adapter(self, name: str) -> None:
        adapter = self._adapters.pop(name, None)
        if adapter is None:
            raise UnknownName(name)
        base = self._bases[adapter.base]
        with base.lock:
            if (slot := base.slots.pop(name, None)) is not None:
                base.model.delete_adapter(slot)

    # ---- generation ------------------------------------------------------------------------

    def generate(self, model: str, messages: list[tuple[str, str]], *, max_tokens: int | None, temperature: float,
                 top_p: float, seed: int | None, stop: list[str], n: int) -> Generation:
        adapter = self._adapters.get(model)
        base = self.base(adapter.base if adapter else model)
        tokenizer = base.tokenizer
        prompt = tokenizer(render_prompt(tokenizer, [Message(r, c) for r, c in messages]),
                           add_special_tokens=False).input_ids
        room = base.context - len(prompt)
        limit = max_tokens or min(DEFAULT_MAX_TOKENS, room)
        if limit > room:
            raise BadRequest(f"This model's maximum context length is {base.context} tokens; the messages "
                             f"take {len(prompt)} and {limit} were asked for the completion.")
        with base.lock:
            if adapter is not None:
                self._activate(base, model, adapter)
            sampler = HFBackend(base.model, tokenizer.pad_token_id, use_adapter=adapter is not None)
            completions = sampler.generate([prompt] * n, max_new_tokens=limit, temperature=temperature, top_p=top_p,
                                           stop_token_ids=base.stop_ids,
                                           seed=secrets.randbelow(2**62) if seed is None else seed)
        return Generation([_reply(tokenizer, c.token_ids, c.finished, stop) for c in completions], len(prompt))

    def _activate(self, base: _Base, name: str, adapter: _Adapter) -> None:
        """Make `name` the active adapter of `base`, loading it if it is not in memory (lock held)."""
        from peft import PeftModel

        slot = base.slots.get(name)
        if slot is None:
            slot = f"a{next(self._slot_ids)}"
            if isinstance(base.model, PeftModel):
                base.model.load_adapter(str(adapter.path), adapter_name=slot)
            else:
                base.model = PeftModel.from_pretrained(base.model, str(adapter.path), adapter_name=slot).eval()
            base.slots[name] = slot
        base.slots.move_to_end(name)
        base.model.set_adapter(slot)
        while len(base.slots) > self.max_loaded_adapters:
            _, old = base.slots.popitem(last=False)
            base.model.delete_adapter(old)


def _reply(tokenizer, token_ids: list[int], finished: bool, stop: list[str]) -> Reply:
    # The end-of-turn token that finished a reply is not part of its text.
    text_ids = token_ids[:-1] if finished else token_ids
    text = tokenizer.decode(text_ids, skip_special_tokens=True)
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    if cuts:
        text, finish = text[:min(cuts)], "stop"
    else:
        finish = "stop" if finished else "length"
    return Reply(text, finish, len(token_ids), _pieces(tokenizer, text_ids, text))


def _pieces(tokenizer, ids: list[int], text: str) -> list[str]:
    """`text` split where its tokens end. A prefix that ends inside a multi-byte character decodes
    to a replacement character and is not a prefix of `text`; that piece waits for the next token."""
    pieces, sent = [], 0
    for k in range(1, len(ids) + 1):
        prefix = tokenizer.decode(ids[:k], skip_special_tokens=True)
        end = min(len(prefix), len(text))
        if end > sent and text.startswith(prefix[:end]):
            pieces.append(text[sent:end])
            sent = end
        if sent >= len(text):
            break
    if sent < len(text):
        pieces.append(text[sent:])
    return pieces
