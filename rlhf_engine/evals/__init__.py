"""Scripts that measure adapters or build the data they are measured on, run by hand or by bench/.

Nothing in training imports this package. The evaluation a job runs itself (the per-turn win
rate of online methods) is core: rlhf_engine/evaluate_dialogue.py.

    python -m rlhf_engine.evals.dialogue        per-turn win rate of an adapter against its base
    python -m rlhf_engine.evals.concise         the DPO proof on the bundled `concise` dataset
    python -m rlhf_engine.evals.build_concise   rebuild that dataset
"""
