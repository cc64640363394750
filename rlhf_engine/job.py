"""One job as every algorithm receives it, and the set-up steps the algorithms share.

`run.run` builds a `Job` once (the registry entry materialised, the precision decided for the
device), then hands it to the method's algorithm (algorithms/registry.py). Each algorithm loads
its model, trains through `train.fit` and finishes with `save_result`; the steps here are written
once so that every method loads, wraps, reports and exports the same way:

    load_policy      tokenizer, causal LM in the job's precision, a chained job's adapters merged,
                     flex attention, gradient checkpointing, LoRA (or none: finetuning_type "full")
    load_pairs       the training and validation files as token pairs (DPO, SFT, reward models)
    reference_logps  log-probs of the model the job starts from, cached (reference.py)
    fit              train.fit with the job's seed, reporter, output directory and precision
    save_result      the adapter in PEFT layout (a full fine-tune: a transformers directory), or
                     nothing when the run stopped early
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rlhf_engine.callbacks import Reporter
from rlhf_engine.data import formats
from rlhf_engine.data.pairs import tokenize_examples
from rlhf_engine.layout import ADAPTER, MERGED
from rlhf_engine.model_registry import ModelRegistry
from rlhf_engine.outcome import JobInputError, RunResult
from rlhf_engine.precision import Precision
from rlhf_engine.spec import TrainConfig


@dataclass
class Job:
    config: TrainConfig
    reporter: Reporter
    registry: ModelRegistry
    model_dir: Path  # the registry model's weights on local disk
    precision: Precision  # every forward of the job runs in it (rlhf_engine/precision.py)
    cache_dir: Path | None = None
    resume_from: Path | None = None
    # job id -> artifacts dir of a finished reward_model job, for rewards of type "job"; None: refused
    resolve_reward_job: Callable[[str], Path] | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def method(self) -> str:
        return self.config.method.type

    @property
    def hp(self):
        return self.config.method.hyperparameters

    @property
    def out_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def reference_weights(self) -> list[Path]:
        """What the reference is: the model the job starts from, the base and its init_adapters."""
        return [self.model_dir, *map(Path, self.config.init_adapters)]

    def report_loaded(self, model, what: str = "") -> None:
        self.reporter.event(f"Loaded {self.config.model}{what} on {self.precision.device} ({self.precision.tag}) in "
                            f"{time.perf_counter() - self.started:.1f}s",
                            data={"trainable_parameters": sum(p.numel() for p in model.parameters()
                                                              if p.requires_grad)})


def load_policy(job: Job, *, lora_dropout: bool = True):
    """(peft model, tokenizer): the causal LM in the job's precision with a fresh LoRA adapter over
    a chained job's merged init_adapters. lora_dropout=False turns the spec's dropout off, with a
    warning: the regression methods compare the policy with log pi_t computed in eval mode.
    finetuning_type "full": the causal LM itself, every weight trainable (fp32: precision.decide);
    its reference is the same model before training (reference_logps), no second copy."""
    from rlhf_engine.models import loading

    config, hp = job.config, job.hp
    tokenizer = loading.load_tokenizer(job.model_dir)
    base = loading.load_causal_lm(job.model_dir, dtype=job.precision.weights, device=job.precision.device)
    base = loading.merge_adapters(base, config.init_adapters)  # a chained job: the model it continues
    if config.attention == "flex":
        from rlhf_engine.attention import enable_flex

        try:
            enable_flex(base)
        except ValueError as err:
            raise JobInputError(str(err)) from None
    if hp.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    if hp.full:
        job.report_loaded(base, " (full fine-tuning)")
        return base, tokenizer
    lora = hp.lora
    if not lora_dropout and lora.dropout:
        # log pi_t (collection, eval mode) and the training forward must be one function, or the
        # step-0 log-ratio is dropout noise instead of 0: these methods train without it.
        job.reporter.event(f"LoRA dropout {lora.dropout} is turned off: {job.method} compares the policy with "
                           "log pi_t computed without dropout", level="warn")
        lora = lora.model_copy(update={"dropout": 0.0})
    model = loading.add_lora(base, lora, seed=config.seed)
    job.report_loaded(model)
    return model, tokenizer


def load_pairs(job: Job, tokenizer, *, expected_format: str | None = None):
    """(training pairs, validation pairs or []) of the job's files, tokenised (data/pairs.py)."""
    config, hp, reporter = job.config, job.hp, job.reporter
    train = formats.load_jsonl(config.training_file, expected_format=expected_format).examples
    evals = (formats.load_jsonl(config.validation_file, expected_format=expected_format).examples
             if config.validation_file else [])
    pairs = tokenize_examples(tokenizer, train, hp, reporter, "training")
    eval_pairs = tokenize_examples(tokenizer, evals, hp, reporter, "validation") if evals else []
    return pairs, eval_pairs


def reference_logps(job: Job, model, pad_id: int, pairs, eval_pairs=()):
    """(training, validation or None) [n, 2] float32 (chosen, rejected) log-probs of the model the
    job starts from (the adapter disabled), from the cache when an earlier job computed them for
    the same tokens (reference.py)."""
    from rlhf_engine import reference

    started = time.perf_counter()
    ref, hit = reference.load_or_compute(model, job.reference_weights, pairs, pad_id, job.cache_dir, job.precision,
                                         packing=job.config.packing)
    eval_ref = (reference.load_or_compute(model, job.reference_weights, eval_pairs, pad_id, job.cache_dir,
                                          job.precision, packing=job.config.packing)[0] if eval_pairs else None)
    job.reporter.event(f"Reference log-probs {'loaded from cache' if hit else 'computed'} for {len(pairs)} pairs "
                       f"in {time.perf_counter() - started:.1f}s")
    return ref.float(), eval_ref.float() if eval_ref is not None else None


def fit(job: Job, model, algo, *, what: str = "examples", hp=None, **kwargs):
    """train.fit over `algo` with the job's seed, reporter, output directory, resume point and
    precision; `hp`, `seed`, `reporter`, `resume_from`, `step_offset` may be overridden (the online
    methods call it once per iteration)."""
    from rlhf_engine.train import fit as train_fit

    hp = hp or job.hp
    kwargs = {"seed": job.config.seed, "reporter": job.reporter, "resume_from": job.resume_from, **kwargs}
    if what:
        job.reporter.event(f"Training {job.method} on {algo.num_examples} {what} for {hp.epochs} epoch(s)")
    return train_fit(model, algo, hp, out_dir=job.out_dir, precision=job.precision, **kwargs)


def save_result(job: Job, model, result, *, tokenizer=None, summary: dict | None = None) -> RunResult:
    """The RunResult of a finished fit: the adapter in PEFT layout (for a chained job combined with
    its init_adapters, so it loads on the registry base), or none when the run stopped early. A full
    fine-tune (every rank calls this: its weights are gathered from their shards) writes its whole
    model, with `tokenizer`, as a transformers directory instead."""
    from rlhf_engine.distributed import world
    from rlhf_engine.export import save_adapter, save_full

    if result.stopped:
        return RunResult(None, result.steps, result.trained_tokens, True, result.final_metrics)
    merged = save_full(model, tokenizer, job.out_dir / MERGED) if job.hp.full else None
    if not world().is_main:  # on N ranks rank 0 writes the result (the weights are the same on all)
        return RunResult(None, result.steps, result.trained_tokens, False, result.final_metrics)
    adapter = None if job.hp.full else save_adapter(model, job.out_dir / ADAPTER, job.config.model,
                                                    stacked_on=job.config.init_adapters)
    return RunResult(adapter, result.steps, result.trained_tokens, False, {**result.final_metrics, **(summary or {})},
                     merged_dir=merged)
