"""The GPU benchmark's model: a randomly initialised Llama with a real 1B-class shape.

No weights can be fetched on the GPU machine, so the model is built locally: the Llama-3.2-1B
architecture (hidden 2048, 16 layers, 32 heads / 8 KV heads, MLP 8192, tied embeddings) with a
byte-level BPE tokenizer (vocab 32k) trained here on the benchmark's own synthetic text, and a
ChatML chat template. Random weights make the throughput and memory figures meaningful (they
depend on shapes only); losses are ~log(V) and the first-step check still compares both systems.
"""

from __future__ import annotations

from pathlib import Path

LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 64}
# The dry runs' shape: the same code paths, on a CPU, in seconds.
TOY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1000}


def for_check(cache: Path, dry: bool) -> Path:
    """The GPU check's model in `cache`: the 1B-class Llama, or with `dry` the toy one."""
    return build(cache / "toy-llama", **TOY) if dry else build(cache / "llama-1b-random")


def build(dest: Path, *, vocab_size: int = 32000, seed: int = 0, **shape) -> Path:
    """The model at `dest` (built once); `shape` overrides LLAMA_1B's fields (toy sizes for dry runs)."""
    dest = Path(dest)
    if (dest / "config.json").exists():
        return dest
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from bench import workloads
    from rlhf_engine.models.builtin import CHATML_TEMPLATE

    corpus = []
    for _name, make in workloads.WORKLOADS.items():
        for row in make(200, 12345):
            corpus += [m["content"] for m in row["input"]["messages"]]
            corpus += [row["preferred_output"][0]["content"], row["non_preferred_output"][0]["content"]]
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, **{**LLAMA_1B, **shape}, max_position_embeddings=8192,
                         rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest
