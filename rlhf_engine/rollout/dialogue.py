"""Multi-turn dialogue rollouts: the policy plays the assistant, a simulator or the dataset the user.

A dialogue is its messages plus, for every assistant turn, the exact token ids the policy saw
(`prompt_ids`: the chat-template rendering of everything before the turn) and produced
(`response_ids`, end-of-turn included). Training reads those ids back unchanged, so the tokens
that carry the loss are exactly the tokens that were sampled, and the prompt a REFUEL pair
shares is one list of ids.

All dialogues of a batch advance together: one batched generate per turn for the assistant and
one for the simulated user, each dialogue stopping at its own target number of turns.

Randomness belongs to the dialogue, not to the batch: each dialogue has a `stream` id, and the
sample for its turn k is drawn with the seed (call seed, stream, role, k) (rollout/generation.py
draws every row from its own seed). A dialogue's turns therefore do not depend on which other
dialogues share its batch, how many have already ended, or their order; the policy and the base
replaying the same streams see the same random numbers (evaluate_dialogue.py), and REFUEL's two
continuations of one prefix are the prefix's stream with branch 0 and 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rlhf_engine.data.examples import ChatExample, DialogueSeed, Message, PreferenceExample, PromptExample
from rlhf_engine.rollout.generation import Backend, stream_seed


@dataclass(frozen=True)
class Seed:
    """Where a dialogue starts: history ending with a user turn, fixed later user turns, info."""

    history: tuple[Message, ...]
    later_user_turns: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)


def seeds_from_examples(examples) -> list[Seed]:
    """Any accepted training format -> seeds (preference/chat examples keep only their prompt)."""
    seeds = []
    for ex in examples:
        if isinstance(ex, DialogueSeed):
            system = (Message("system", ex.system),) if ex.system else ()
            seeds.append(Seed(system + (Message("user", ex.user_turns[0]),), ex.user_turns[1:], dict(ex.info)))
        elif isinstance(ex, PromptExample):
            seeds.append(Seed(ex.prompt, (), dict(ex.info)))
        elif isinstance(ex, PreferenceExample):
            seeds.append(Seed(ex.prompt))
        elif isinstance(ex, ChatExample):
            seeds.append(Seed(ex.messages[:-1]))
        else:
            raise TypeError(f"cannot start a dialogue from {type(ex).__name__}")
    return seeds


@dataclass
class Turn:
    prompt_ids: list[int]
    response_ids: list[int]
    finished: bool


@dataclass
class Dialogue:
    seed: Seed
    messages: list[Message]
    turns: list[Turn] = field(default_factory=list)  # one per assistant turn
    stream: int = 0  # names this dialogue's random numbers (see the module docstring)

    @classmethod
    def start(cls, seed: Seed, stream: int = 0) -> "Dialogue":
        return cls(seed, list(seed.history), stream=stream)

    def copy(self, branch: int | None = None) -> "Dialogue":
        """The same dialogue so far; with `branch`, continuing on a stream of its own."""
        stream = self.stream if branch is None else stream_seed(self.stream, "branch", branch)
        return replace(self, messages=list(self.messages), turns=list(self.turns), stream=stream)

    @property
    def user_turns(self) -> int:
        return sum(m.role == "user" for m in self.messages)

    def upto(self, k: int) -> list[Message]:
        """The messages through the k-th generated assistant turn (what the reward of turn k sees)."""
        seen = 0
        for i in range(len(self.seed.history), len(self.messages)):
            seen += self.messages[i].role == "assistant"
            if seen == k:
                return self.messages[:i + 1]
        return list(self.messages)


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float
    top_p: float
    stop_ids: tuple[int, ...]


def encode_prompt(tokenizer, messages: list[Message]) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                         tokenize=False, add_generation_prompt=True)
    # The template writes its own special tokens; adding BOS again would double it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class Roller:
    """Advances dialogues: `assistant` is the policy backend, `users` a users.* simulator."""

    def __init__(self, tokenizer, assistant: Backend, users, sampling: Sampling):
        self.tokenizer, self.assistant, self.users, self.sampling = tokenizer, assistant, users, sampling

    def assistant_step(self, dialogues: list[Dialogue], seed: int) -> None:
        prompts = [encode_prompt(self.tokenizer, d.messages) for d in dialogues]
        s = self.sampling
        outs = self.assistant.generate(prompts, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                       top_p=s.top_p, stop_token_ids=list(s.stop_ids),
                                       seed=[stream_seed(seed, d.stream, "assistant", len(d.turns)) for d in dialogues])
        for d, p, o in zip(dialogues, prompts, outs):
            d.turns.append(Turn(p, list(o.token_ids), o.finished))
            text = self.tokenizer.decode(o.token_ids, skip_special_tokens=True).strip()
            d.messages.append(Message("assistant", text))

    def user_step(self, dialogues: list[Dialogue], seed: int) -> None:
        seeds = [stream_seed(seed, d.stream, "user", d.user_turns) for d in dialogues]
        for d, text in zip(dialogues, self.users.next_turns(dialogues, seed=seeds)):
            d.messages.append(Message("user", text))

    def horizon(self, d: Dialogue, wanted: int) -> int:
        """Assistant turns this dialogue can have: fixed user turns may run out."""
        limit = self.users.max_turns(d.seed)
        return wanted if limit is None else min(wanted, limit)

    def rollout(self, dialogues: list[Dialogue], targets: list[int], seed: int) -> None:
        """Advance each dialogue until it holds targets[i] assistant turns (ends on an assistant turn)."""
        while True:
            active = [d for d, n in zip(dialogues, targets) if len(d.turns) < n]
            if not active:
                return
            need_user = [d for d in active if d.messages[-1].role == "assistant"]
            if need_user:
                self.user_step(need_user, seed)
            self.assistant_step(active, seed)
