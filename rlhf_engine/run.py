"""Run one training job: the engine's single entry point for the CLI and the worker.

    config (TrainConfig) -> Job (model on disk, precision) -> the method's algorithm -> adapter on disk

What every method needs is set up here once; the algorithm for `method.type` comes from
rlhf_engine/algorithms/registry.py. Heavy imports happen here, never at package import.
"""

from __future__ import annotations

import time
from pathlib import Path

from rlhf_engine.callbacks import Reporter
from rlhf_engine.model_registry import ModelRegistry
from rlhf_engine.outcome import JobInputError, RunResult
from rlhf_engine.spec import TrainConfig

__all__ = ["JobInputError", "RunResult", "run"]


def run(config: TrainConfig, reporter: Reporter, *, registry: ModelRegistry | None = None,
        cache_dir: Path | None = None, resume_from: Path | None = None, resolve_reward_job=None) -> RunResult:
    """resolve_reward_job(job_id) -> Path: artifacts dir of a finished reward_model job (holding
    `adapter/`), for online methods whose reward source is `{"type": "job"}`; None disables those."""
    from transformers.utils import logging as hf_logging

    from rlhf_engine import distributed
    from rlhf_engine import precision as precisions
    from rlhf_engine.algorithms.registry import algorithm
    from rlhf_engine.job import Job
    from rlhf_engine.models import loading

    hf_logging.disable_progress_bar()
    registry = registry or ModelRegistry.load()
    train = algorithm(config.method.type)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model_dir = loading.materialise(registry.get(config.model), cache_dir)
    precision = precisions.decide(config.precision, precisions.default_device(),  # for every forward of the job
                                  full=config.method.hyperparameters.full)
    created = distributed.init(precision.device)  # launched on N ranks: join them (rlhf_engine/distributed.py)
    completed = False
    try:
        result = train(Job(config, distributed.reporter_for(reporter), registry, model_dir, precision,
                           cache_dir=cache_dir, resume_from=resume_from, resolve_reward_job=resolve_reward_job,
                           started=started))
        completed = True
        return result
    finally:
        distributed.finish(created, completed=completed)
