"""Small shipped tasks: dialogue seeds (rlhf_engine/datasets/*.jsonl) plus their reward functions."""
