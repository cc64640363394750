"""External experiment trackers (W&B, MLflow), optional: neither package is a dependency.

    trackers_from_env(run_name, config)     what the environment configures (WANDB_PROJECT, MLFLOW_TRACKING_URI)
    wandb_tracker(settings, run_name, ...)  a job's own W&B integration, or why it cannot start

A tracker receives every metrics call through rlhf_engine/tracking/reporter.py. Starting one is
best effort: a tracker that cannot start is logged and skipped, never allowed to fail a run.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Protocol

log = logging.getLogger(__name__)


class Tracker(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class WandbTracker:
    def __init__(self, project: str, run_name: str | None, config: dict | None, *, entity: str | None = None,
                 tags: list[str] | None = None, display_name: str | None = None):
        import wandb  # optional; only when configured

        self._wandb = wandb
        # The run id stays the job's (a resumed job continues its run); `display_name` is what W&B shows.
        self._run = wandb.init(project=project, name=display_name or run_name, id=run_name, resume="allow",
                               config=config or {}, entity=entity, tags=tags, reinit=True)

    def log(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=step)

    def close(self) -> None:
        self._run.finish()


class MlflowTracker:
    def __init__(self, experiment: str | None, run_name: str | None, config: dict | None):
        import mlflow  # optional; only when configured

        self._mlflow = mlflow
        if experiment:
            mlflow.set_experiment(experiment)
        self._run = mlflow.start_run(run_name=run_name)
        if config:
            mlflow.log_params(_flatten(config))

    def log(self, step: int, values: dict[str, float]) -> None:
        self._mlflow.log_metrics(values, step=step, run_id=self._run.info.run_id)

    def close(self) -> None:
        self._mlflow.end_run()


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def trackers_from_env(run_name: str | None = None, config: dict | None = None,
                      env: dict[str, str] | None = None) -> list[Tracker]:
    """W&B when WANDB_PROJECT is set and `wandb` is installed; MLflow when MLFLOW_TRACKING_URI is
    set and `mlflow` is installed (experiment from MLFLOW_EXPERIMENT_NAME). Neither is a
    dependency. A tracker that fails to start is logged and skipped."""
    env = os.environ if env is None else env
    found: list[Tracker] = []
    if env.get("WANDB_PROJECT") and _importable("wandb"):
        try:
            found.append(WandbTracker(env["WANDB_PROJECT"], run_name, config))
        except Exception:
            log.exception("could not start the W&B run; continuing without it")
    if env.get("MLFLOW_TRACKING_URI") and _importable("mlflow"):
        try:
            found.append(MlflowTracker(env.get("MLFLOW_EXPERIMENT_NAME"), run_name, config))
        except Exception:
            log.exception("could not start the MLflow run; continuing without it")
    return found


def _wandb_credentials(env: dict[str, str]) -> bool:
    """An API key in the environment, an offline/disabled mode, or a `wandb login` in ~/.netrc."""
    if env.get("WANDB_API_KEY") or env.get("WANDB_MODE") in ("offline", "disabled"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_tracker(settings: dict, run_name: str | None = None, config: dict | None = None,
                  env: dict[str, str] | None = None) -> tuple[Tracker | None, str | None]:
    """A W&B run for a job's OpenAI-style integration (`project`, `name`, `entity`, `tags`), or
    (None, why not): no `wandb` package, no credentials, or a run that would not start."""
    env = os.environ if env is None else env
    if not _importable("wandb"):
        return None, "the `wandb` package is not installed on the worker"
    if not _wandb_credentials(env):
        return None, "the worker has no W&B credentials (WANDB_API_KEY or `wandb login`)"
    try:
        return WandbTracker(settings["project"], run_name, config, entity=settings.get("entity"),
                            tags=settings.get("tags"), display_name=settings.get("name")), None
    except Exception as err:
        log.exception("could not start the W&B run")
        return None, f"the W&B run could not start ({type(err).__name__})"
