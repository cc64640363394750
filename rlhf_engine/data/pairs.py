"""Examples of a dataset file -> the token pairs DPO, SFT and reward models train on."""

from __future__ import annotations

from rlhf_engine.callbacks import Reporter
from rlhf_engine.data import formats
from rlhf_engine.data.tokenize import ExampleTooLong, tokenize_chat, tokenize_pair
from rlhf_engine.outcome import JobInputError


def _targets(example):
    """What one example trains on: a preference pair, or each chat turn that carries loss (the
    conversation up to and including that assistant turn)."""
    if isinstance(example, formats.PreferenceExample):
        return [example]
    return [example.messages[:i + 1] for i in example.trained]


def tokenize_examples(tokenizer, examples, hp, reporter: Reporter, what: str):
    """Every example of a file as token pairs (a chat example: one per trained assistant turn);
    examples that do not fit `hp.max_length` are left out and reported by line."""
    pairs, too_long, truncated = [], [], 0
    for line, ex in enumerate(examples, start=1):
        for target in _targets(ex):
            try:
                if isinstance(target, formats.PreferenceExample):
                    pair = tokenize_pair(tokenizer, target, max_length=hp.max_length,
                                         max_prompt_length=hp.max_prompt_length)
                else:
                    pair = tokenize_chat(tokenizer, target, max_length=hp.max_length,
                                         max_prompt_length=hp.max_prompt_length)
            except ExampleTooLong as err:
                too_long.append((line, str(err)))
                continue
            truncated += pair.prompt_truncated
            pairs.append(pair)
    if too_long:
        lines = ", ".join(str(line) for line, _ in too_long[:20])
        reporter.event(f"{len(too_long)} {what} example(s) do not fit max_length={hp.max_length} and were "
                       f"left out: line(s) {lines}", level="warn",
                       data={"lines": [line for line, _ in too_long], "reason": too_long[0][1]})
    if truncated:
        reporter.event(f"{truncated} {what} prompt(s) were truncated from the left to fit max_length", level="info")
    if not pairs:
        raise JobInputError(f"no {what} example fits max_length={hp.max_length}")
    return pairs
