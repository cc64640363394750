"""Canonical training examples: what every accepted upload format is converted into.

The engine only ever sees these types, whatever format the user uploaded. They are frozen,
slotted dataclasses rather than pydantic models because a 100 MB upload holds hundreds of
thousands of them and they are built on the API's request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn. `role` is system, user or assistant; `content` is non-blank text."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class PreferenceExample:
    """A shared history, then one preferred and one non-preferred final assistant turn."""

    prompt: tuple[Message, ...]  # may start with a system turn; always ends with a user turn
    chosen: Message  # role "assistant"
    rejected: Message  # role "assistant"


@dataclass(frozen=True, slots=True)
class ChatExample:
    """A supervised conversation ending with an assistant turn. `trained` holds the indices of the
    assistant turns that carry loss (OpenAI's `weight: 1`, every assistant turn by default); each
    is trained with the turns before it as its prompt."""

    messages: tuple[Message, ...]
    trained: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PromptExample:
    """A prompt to sample from (REBEL); `info` is passed unchanged to reward functions."""

    prompt: tuple[Message, ...]  # ends with a user turn
    info: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DialogueSeed:
    """The start of a REFUEL dialogue: the first user turn, optionally fixed later ones."""

    system: str | None
    user_turns: tuple[str, ...]  # at least one
    info: dict = field(default_factory=dict)  # e.g. a hidden target the reward function checks
