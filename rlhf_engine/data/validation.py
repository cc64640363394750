"""Turn one decoded JSONL record into a canonical example, or say exactly what is wrong with it.

Every check is a plain dict/list/str test: this runs once per line of uploads up to 100 MB on
the API's request path, where a pydantic model per line would be several times too slow. The
first problem found raises `RecordError` naming the JSON path of the offending field, e.g.
`preferred_output[0].content`; the caller adds the line number.
"""

from __future__ import annotations

from typing import Any, Callable, NoReturn

from rlhf_engine.data.examples import (
    ROLES,
    ChatExample,
    DialogueSeed,
    Message,
    PreferenceExample,
    PromptExample,
)


class RecordError(Exception):
    """One problem in one record: `field` is a JSON path (or None), `code` a stable identifier."""

    def __init__(self, field: str | None, code: str, message: str):
        super().__init__(message)
        self.field, self.code, self.message = field, code, message


def fail(field: str | None, code: str, message: str) -> NoReturn:
    raise RecordError(field, code, message)


# ---------------------------------------------------------------------------------------------
# Building blocks


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def check_keys(obj: dict, required: tuple[str, ...], optional: frozenset[str] = frozenset(),
               prefix: str = "") -> None:
    """Every required key present, nothing outside required + optional (typos must not pass)."""
    for key in required:
        if key not in obj:
            fail(_join(prefix, key), "missing_field", f"missing required field '{key}'")
    if len(obj) > len(required):
        allowed = optional.union(required)
        for key in obj:
            if key not in allowed:
                names = ", ".join(sorted(allowed))
                fail(_join(prefix, key), "unknown_field", f"unknown field '{key}' (allowed: {names})")


def text(value: Any, field: str, what: str = "content") -> str:
    """A non-blank string. Whitespace-only text trains on nothing, so it is an error too."""
    if type(value) is not str:
        fail(field, "wrong_type", f"{what} must be a string, not {_type_name(value)}")
    if not value or value.isspace():
        fail(field, "empty_content", f"{what} is empty")
    return value


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


_MESSAGE_KEYS = frozenset({"role", "content", "name"})
_NEXT_TURN = {"user": "assistant", "assistant": "user"}


def message(value: Any, field: str, index: int | None = None) -> Message:
    """`{"role", "content", optional "name"}` at `field` (or `field[index]`). The name is
    accepted and dropped: chat templates have no place for it, and OpenAI files often carry one.
    `content` is text, or OpenAI's list of content parts of type `text` (joined)."""
    # Fast path for the common, valid message: no paths are formatted unless something is wrong.
    if type(value) is dict and value.keys() <= _MESSAGE_KEYS:
        role, content = value.get("role"), value.get("content")
        if type(role) is str and role in ROLES and type(content) is str and content \
                and not content.isspace():
            return Message(role, content)
    return _checked_message(value, field if index is None else f"{field}[{index}]")


def _checked_message(value: Any, field: str) -> Message:
    if type(value) is not dict:
        fail(field, "wrong_type", f"a message must be an object, not {_type_name(value)}")
    if "tool_calls" in value or "function_call" in value:
        key = "tool_calls" if "tool_calls" in value else "function_call"
        fail(f"{field}.{key}", "unsupported_tool_use", "tool calls are not supported: this service trains on "
                                                       "text turns of system, user and assistant")
    check_keys(value, ("role", "content"), _MESSAGE_KEYS, field)
    role = value["role"]
    if type(role) is not str:
        fail(f"{field}.role", "wrong_type", f"role must be a string, not {_type_name(role)}")
    if role not in ROLES:
        fail(f"{field}.role", "invalid_role",
             f"role '{role}' is not supported; use system, user or assistant"
             + (" (tool use is not supported)" if role in ("tool", "function") else ""))
    content = value["content"]
    if type(content) is list:
        content = content_parts(content, f"{field}.content")
    return Message(role, text(content, f"{field}.content"))


def content_parts(parts: list, field: str) -> str:
    """OpenAI's `[{"type": "text", "text": ...}, ...]`, as one text (the parts joined as they are).
    Any other part (image_url, input_audio, file) is refused: the models here read text only."""
    texts = []
    for i, part in enumerate(parts):
        where = f"{field}[{i}]"
        if type(part) is not dict:
            fail(where, "wrong_type", f"a content part must be an object, not {_type_name(part)}")
        kind = part.get("type")
        if kind != "text":
            fail(f"{where}.type", "unsupported_content",
                 f"content part type {kind!r} is not supported; only 'text' parts are (the models here read "
                 "text only)")
        check_keys(part, ("type", "text"), prefix=where)
        texts.append(text(part["text"], f"{where}.text", "text"))
    if not texts:
        fail(field, "empty_content", "content holds no parts")
    return "".join(texts)


def messages(value: Any, field: str) -> tuple[Message, ...]:
    """A list of messages in a renderable order: an optional system turn first, then turns
    alternating user/assistant starting with user. Many chat templates (Llama 2, Mistral,
    Gemma) raise on anything else, and REFUEL's turn indexing assumes it."""
    if type(value) is not list:
        fail(field, "wrong_type", f"{field} must be a list of messages, not {_type_name(value)}")
    out = []
    expected = "user"
    for i, item in enumerate(value):
        msg = message(item, field, i)
        if msg.role == expected:
            expected = _NEXT_TURN[expected]
        elif msg.role == "system":
            if i:
                fail(f"{field}[{i}].role", "invalid_role", "a system message is only allowed first")
        else:
            fail(f"{field}[{i}].role", "invalid_role",
                 f"{msg.role} turn where a {expected} turn is required "
                 "(turns alternate user/assistant, starting with user)")
        out.append(msg)
    return tuple(out)


def _ending_with(role: str, value: Any, field: str, code: str) -> tuple[Message, ...]:
    msgs = messages(value, field)
    if not msgs or msgs[-1].role != role:
        where = f"{field}[{len(msgs) - 1}].role" if msgs else field
        fail(where, code, f"{field} must end with {'a user' if role == 'user' else 'an assistant'} turn")
    return msgs


def prompt_messages(value: Any, field: str) -> tuple[Message, ...]:
    """A history the model answers next: it must end with a user turn."""
    return _ending_with("user", value, field, "prompt_must_end_with_user")


def conversation(value: Any, field: str) -> tuple[Message, ...]:
    """A history whose last turn is the assistant's (the turn that is trained on)."""
    return _ending_with("assistant", value, field, "no_final_assistant")


def completion(value: Any, field: str) -> Message:
    """Exactly one assistant message, in a list (OpenAI `preferred_output`, TRL `chosen`)."""
    if type(value) is not list or len(value) != 1:
        got = f"{len(value)} messages" if type(value) is list else _type_name(value)
        fail(field, "wrong_type", f"{field} must be a list holding exactly one assistant message, "
                                  f"not {got}")
    msg = message(value[0], field, 0)
    if msg.role != "assistant":
        fail(f"{field}[0].role", "invalid_role", f"{field} must be an assistant message, not {msg.role}")
    return msg


def info(obj: dict) -> dict:
    value = obj.get("info", {})
    if type(value) is not dict:
        fail("info", "wrong_type", f"info must be an object, not {_type_name(value)}")
    return value


def preference(prompt: tuple[Message, ...], chosen: Message, rejected: Message,
               rejected_field: str) -> PreferenceExample:
    # Texts differing only in surrounding whitespace carry no preference, only tokenizer noise.
    if chosen.content.strip() == rejected.content.strip():
        fail(rejected_field, "identical_completions", "chosen and rejected completions are identical")
    return PreferenceExample(prompt, chosen, rejected)


# ---------------------------------------------------------------------------------------------
# One converter per accepted record shape


_TOOL_KEYS = frozenset({"tools", "parallel_tool_calls"})  # accepted, ignored: no tool use yet
_TRL_EXTRA = frozenset({"id", "metadata", "score_chosen", "score_rejected"})


def openai_preference(obj: dict) -> PreferenceExample:
    """`{"input": {"messages"}, "preferred_output": [msg], "non_preferred_output": [msg]}`."""
    check_keys(obj, ("input", "preferred_output", "non_preferred_output"))
    inp = obj["input"]
    if type(inp) is not dict:
        fail("input", "wrong_type", f"input must be an object, not {_type_name(inp)}")
    check_keys(inp, ("messages",), _TOOL_KEYS, "input")
    prompt = prompt_messages(inp["messages"], "input.messages")
    chosen = completion(obj["preferred_output"], "preferred_output")
    rejected = completion(obj["non_preferred_output"], "non_preferred_output")
    return preference(prompt, chosen, rejected, "non_preferred_output[0].content")


def trl_preference(obj: dict) -> PreferenceExample:
    """TRL's preference shapes: explicit prompt (text or messages), or implicit prompt."""
    if "prompt" not in obj:
        return _trl_implicit(obj)
    check_keys(obj, ("prompt", "chosen", "rejected"), _TRL_EXTRA)
    prompt = obj["prompt"]
    if type(prompt) is str:  # standard: three strings
        user = (Message("user", text(prompt, "prompt", "prompt")),)
        chosen, rejected = (Message("assistant", _plain(obj, key)) for key in ("chosen", "rejected"))
        return preference(user, chosen, rejected, "rejected")
    if type(prompt) is not list:
        fail("prompt", "wrong_type", f"prompt must be a string or a list of messages, "
                                     f"not {_type_name(prompt)}")
    history = prompt_messages(prompt, "prompt")
    chosen = completion(obj["chosen"], "chosen")
    rejected = completion(obj["rejected"], "rejected")
    return preference(history, chosen, rejected, "rejected[0].content")


def _plain(obj: dict, key: str) -> str:
    if type(obj[key]) is not str:
        fail(key, "wrong_type", f"{key} must be a string when prompt is a string, "
                                f"not {_type_name(obj[key])}")
    return text(obj[key], key, key)


def _trl_implicit(obj: dict) -> PreferenceExample:
    """Two full conversations; everything but their final assistant turn is the shared prompt."""
    check_keys(obj, ("chosen", "rejected"), _TRL_EXTRA)
    if type(obj["chosen"]) is str:
        fail("prompt", "implicit_prompt_needs_messages",
             "chosen and rejected are plain text but there is no prompt: add a 'prompt' field, "
             "or give chosen and rejected as message lists sharing their leading turns")
    chosen = conversation(obj["chosen"], "chosen")
    rejected = conversation(obj["rejected"], "rejected")
    prompt = chosen[:-1]
    if rejected[:-1] != prompt:
        fail(*_first_difference(prompt, rejected[:-1]))
    return preference(prompt, chosen[-1], rejected[-1], f"rejected[{len(prompt)}].content")


def _first_difference(prompt: tuple[Message, ...], other: tuple[Message, ...]) -> tuple[str, str, str]:
    why = "chosen and rejected must share every turn before their final assistant turn"
    for i, (a, b) in enumerate(zip(prompt, other)):
        if a != b:
            part = "role" if a.role != b.role else "content"
            return f"rejected[{i}].{part}", "prompt_mismatch", f"{why}; turn {i} differs"
    return "rejected", "prompt_mismatch", (f"{why}; chosen has {len(prompt) + 1} turns, "
                                           f"rejected {len(other) + 1}")


def chat(obj: dict) -> ChatExample:
    """OpenAI supervised format: `{"messages": [..., assistant]}`, where an assistant message may
    carry `weight` 0 (not trained on) or 1 (the default)."""
    check_keys(obj, ("messages",), _TOOL_KEYS)
    raw, weights = _without_weights(obj["messages"])
    msgs = conversation(raw, "messages")
    trained = tuple(i for i, m in enumerate(msgs) if m.role == "assistant" and weights.get(i, 1))
    if not trained:
        fail("messages", "no_trained_turn", "every assistant message has weight 0; at least one must have "
                                            "weight 1 to train on")
    return ChatExample(msgs, trained)


def _without_weights(value: Any) -> tuple[Any, dict[int, int]]:
    """The messages without their `weight` keys, and those weights by message index."""
    if type(value) is not list or not any(type(m) is dict and "weight" in m for m in value):
        return value, {}
    stripped, weights = [], {}
    for i, m in enumerate(value):
        if type(m) is dict and "weight" in m:
            w = m["weight"]
            if type(w) is not int or w not in (0, 1):
                fail(f"messages[{i}].weight", "invalid_weight", f"weight must be 0 or 1, not {w!r}")
            if m.get("role") != "assistant":
                fail(f"messages[{i}].weight", "invalid_weight", "weight is only allowed on assistant messages")
            weights[i] = w
            m = {k: v for k, v in m.items() if k != "weight"}
        stripped.append(m)
    return stripped, weights


def prompt_completion(obj: dict) -> ChatExample:
    """OpenAI's and TRL's `{"prompt", "completion"}`: text and text, or messages ending with a
    user turn and a list of one assistant message. Trained on the completion."""
    check_keys(obj, ("prompt", "completion"), _TRL_EXTRA)
    prompt = obj["prompt"]
    if type(prompt) is str:
        history = (Message("user", text(prompt, "prompt", "prompt")),)
        reply = Message("assistant", _plain(obj, "completion"))
    elif type(prompt) is list:
        history = prompt_messages(prompt, "prompt")
        reply = completion(obj["completion"], "completion")
    else:
        fail("prompt", "wrong_type", f"prompt must be a string or a list of messages, not {_type_name(prompt)}")
    return ChatExample((*history, reply), (len(history),))


def prompts(obj: dict) -> PromptExample:
    """`{"prompt": text | [messages ending with user], "info"?: {...}}`."""
    check_keys(obj, ("prompt",), frozenset({"info"}))
    prompt = obj["prompt"]
    if type(prompt) is str:
        return PromptExample((Message("user", text(prompt, "prompt", "prompt")),), info(obj))
    if type(prompt) is not list:
        fail("prompt", "wrong_type", f"prompt must be a string or a list of messages, "
                                     f"not {_type_name(prompt)}")
    return PromptExample(prompt_messages(prompt, "prompt"), info(obj))


def dialogues(obj: dict) -> DialogueSeed:
    """`{"user_turns": [text, ...], "system"?: text, "info"?: {...}}` (REFUEL seeds)."""
    check_keys(obj, ("user_turns",), frozenset({"system", "info"}))
    turns = obj["user_turns"]
    if type(turns) is not list:
        fail("user_turns", "wrong_type", f"user_turns must be a list of strings, not {_type_name(turns)}")
    if not turns:
        fail("user_turns", "empty_content", "user_turns must hold at least one user turn")
    users = tuple(text(t, f"user_turns[{i}]", "user turn") for i, t in enumerate(turns))
    system = obj.get("system")
    if system is not None:
        system = text(system, "system", "system")
    return DialogueSeed(system, users, info(obj))


# ---------------------------------------------------------------------------------------------
# Telling the shapes apart

# shape name -> (format family, converter)
SHAPES: dict[str, tuple[str, Callable[[dict], Any]]] = {
    "openai_preference": ("preference", openai_preference),
    "trl_preference": ("preference", trl_preference),
    "chat": ("chat", chat),
    "prompt_completion": ("chat", prompt_completion),
    "dialogues": ("dialogues", dialogues),
    "prompts": ("prompts", prompts),
}


def detect(obj: dict) -> str:
    """Name a record's shape from its keys alone, so that a record with a bad value is still
    recognised (and its real problem reported) instead of being called unrecognisable."""
    if "input" in obj or "preferred_output" in obj or "non_preferred_output" in obj:
        return "openai_preference"
    if "chosen" in obj or "rejected" in obj:
        return "trl_preference"
    if "messages" in obj:
        return "chat"
    if "user_turns" in obj:
        return "dialogues"
    if "completion" in obj:
        return "prompt_completion"
    if "prompt" in obj:
        return "prompts"
    fail(None, "missing_field",
         "unrecognised record: expected 'input'/'preferred_output'/'non_preferred_output' "
         "(OpenAI preference), 'prompt'/'chosen'/'rejected' (TRL preference), 'messages' (chat), "
         "'prompt'/'completion' (chat), 'prompt' (prompts) or 'user_turns' (dialogues)")
