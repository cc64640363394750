"""What every generation backend takes and returns, apart from the backends themselves.

    generate(prompts_token_ids, *, max_new_tokens, temperature, top_p, stop_token_ids, seed)
        -> [Completion(token_ids, logprob_sum, finished)]

Randomness is per row: row i of a request draws from its own stream, seeded by `seed[i]` when
`seed` is a list, else by a hash of (seed, i) (`row_seeds`). A row's samples therefore depend on
its prompt and its seed only, never on the other rows, their order or the batch size: common
random numbers survive a change of the batch (the policy and the base replaying the same seeds in
evaluate_dialogue.py, a resumed collection). Both backends (hf_backend.py, vllm_backend.py) read
the seeds from here, so they agree on which row gets which stream.

`Completion.logprob_sum` is the sampler's own sum of log pi(token) (temperature-scaled logits); it
is diagnostic only: training recomputes log-probs through rlhf_engine.logprobs, so collection and
training share one code path. No torch here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]  # up to and including the stop token when finished
    logprob_sum: float | None
    finished: bool  # emitted a stop token before max_new_tokens


class Backend(Protocol):
    def generate(self, prompts_token_ids: list[list[int]], *, max_new_tokens: int, temperature: float,
                 top_p: float, stop_token_ids: list[int], seed: int | Sequence[int]) -> list[Completion]: ...


def row_seeds(seed: int | Sequence[int], rows: int) -> list[int]:
    """One sampling seed per row of a request: the given list, or hashes of (seed, row).

    A hash, not seed + row, so that row 1 under seed s and row 0 under seed s + 1 (successive
    generate calls of a Roller) do not share a stream."""
    if isinstance(seed, Sequence):
        if len(seed) != rows:
            raise ValueError(f"{len(seed)} seeds for {rows} prompts")
        return [int(s) for s in seed]
    return [stream_seed(seed, row) for row in range(rows)]


def stream_seed(*parts) -> int:
    """A seed named by its parts, e.g. (collection seed, dialogue, turn): a hash, so that streams
    whose parts differ anywhere are unrelated. 63 bits: any generator takes it."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1



def stop_ids(tokenizer) -> list[int]:
    """End-of-turn tokens: the tokenizer's EOS plus the chat template's turn terminator, if any."""
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)
