"""Chat-template tokenisation with exact completion masks.

A conversation is rendered with the tokenizer's own chat template. The prompt is the history
rendered with the generation prompt (`<|im_start|>assistant\n` for ChatML); the completion is the
rest of the final assistant turn up to and including its end-of-turn token (what the model must
generate, and what the loss sees). The split is checked so that

    tokens(prompt) + tokens(completion) == tokens(prompt_text + completion_text)

which keeps training and generation on the same token boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_engine.data.formats import Message, PreferenceExample


@dataclass(frozen=True, slots=True)
class TokenizedPair:
    prompt: list[int]
    chosen: list[int]  # completion tokens, end-of-turn included
    rejected: list[int]
    prompt_truncated: bool = False
    # Which completion tokens are targets (one flag per token); None: all of them. A non-target
    # token is context only: a user turn inside a multi-turn completion is read, never predicted.
    chosen_mask: list[bool] | None = None
    rejected_mask: list[bool] | None = None

    @property
    def num_tokens(self) -> int:  # tokens a forward over both sequences processes
        return 2 * len(self.prompt) + len(self.chosen) + len(self.rejected)


class ExampleTooLong(ValueError):
    pass


def _as_dicts(messages) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in messages]


def render_prompt(tokenizer, messages) -> str:
    return tokenizer.apply_chat_template(_as_dicts(messages), tokenize=False, add_generation_prompt=True)


def _encode(tokenizer, text: str) -> list[int]:
    # The template writes its own special tokens; adding BOS again would double it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn_ids(tokenizer, completion_ids: list[int]) -> int:
    """Length of the completion up to and including its first special token (the end of turn).

    Templates append text after the end-of-turn token (ChatML adds a newline); the model never
    generates that, so it is not part of the completion. A template with no special token at the
    end of a turn gets the tokenizer's EOS appended by the caller.
    """
    special = set(tokenizer.all_special_ids)
    for i, tok in enumerate(completion_ids):
        if tok in special:
            return i + 1
    return -1


def tokenize_completion(tokenizer, prompt_messages, reply: Message, prompt_text: str,
                        prompt_ids: list[int]) -> list[int]:
    full_text = tokenizer.apply_chat_template(_as_dicts([*prompt_messages, reply]), tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template renders the prompt differently once a reply follows it; "
                         "set a template whose prompt is a prefix of the conversation")
    full_ids = _encode(tokenizer, full_text)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        completion = full_ids[len(prompt_ids):]
    else:  # a merge across the boundary: tokenise apart, as generation would see it
        completion = _encode(tokenizer, full_text[len(prompt_text):])
    end = end_of_turn_ids(tokenizer, completion)
    if end > 0:
        return completion[:end]
    return completion + [tokenizer.eos_token_id]


def tokenize_pair(tokenizer, example: PreferenceExample, *, max_length: int,
                  max_prompt_length: int) -> TokenizedPair:
    """Tokenise one preference pair; truncate the prompt from the left, never the completions.

    Raises ExampleTooLong if the longer completion alone leaves no room for a prompt token.
    """
    prompt_text = render_prompt(tokenizer, example.prompt)
    prompt = _encode(tokenizer, prompt_text)
    chosen = tokenize_completion(tokenizer, example.prompt, example.chosen, prompt_text, prompt)
    rejected = tokenize_completion(tokenizer, example.prompt, example.rejected, prompt_text, prompt)
    longest = max(len(chosen), len(rejected))
    room = min(max_prompt_length, max_length - longest)
    if room < 1:
        raise ExampleTooLong(f"a completion of {longest} tokens does not fit max_length={max_length}")
    truncated = len(prompt) > room
    if truncated:  # keep the end of the prompt: the latest turns and the generation prompt
        prompt = prompt[-room:]
    return TokenizedPair(prompt, chosen, rejected, truncated)


def tokenize_chat(tokenizer, messages, *, max_length: int, max_prompt_length: int) -> TokenizedPair:
    """An SFT example as a pair whose rejected side is empty (the loss only reads `chosen`)."""
    *history, reply = messages
    example = PreferenceExample(prompt=tuple(history), chosen=reply, rejected=reply)
    pair = tokenize_pair(tokenizer, example, max_length=max_length, max_prompt_length=max_prompt_length)
    return TokenizedPair(pair.prompt, pair.chosen, [], pair.prompt_truncated)
