"""`rlhf-engine train CONFIG.yaml` (also `python -m rlhf_engine train ...`): run a job without the service.

The config is the jobs API body with file paths instead of file ids (rlhf_engine.spec.TrainConfig):

    model: smollm2-135m-instruct
    training_file: data/prefs.jsonl
    method: {type: dpo, dpo: {hyperparameters: {beta: 0.1, n_epochs: 1}}}
    output_dir: runs/my-run

Metrics, events and the samples of each evaluation go to stdout as JSON lines; a progress bar
goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


class ConsoleReporter:
    """Metrics, events and samples as JSON lines on stdout, a progress bar on stderr."""

    def __init__(self, out=sys.stdout):
        self.out, self.bar = out, None

    def _emit(self, record: dict) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def event(self, message, *, level="info", data=None):
        self._emit({"type": "event", "level": level, "message": message, **({"data": data} if data else {})})

    def metrics(self, step, values, *, total_steps=None):
        self._emit({"type": "metrics", "step": step, **values})
        if total_steps:
            from tqdm import tqdm

            if self.bar is None:
                self.bar = tqdm(total=total_steps, file=sys.stderr, unit="step")
            self.bar.total = total_steps
            self.bar.n = step
            self.bar.set_postfix(loss=f"{values.get('loss', float('nan')):.4f}")
            self.bar.refresh()

    def checkpoint(self, step, path, metrics):
        self._emit({"type": "checkpoint", "step": step, "path": str(path)})

    def samples(self, step, items):
        self._emit({"type": "samples", "step": step, "items": items})

    def should_stop(self):
        return False


def load_config(path: Path):
    import yaml
    from pydantic import ValidationError

    from rlhf_engine.spec import TrainConfig

    raw = yaml.safe_load(Path(path).read_text()) or {}
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise SystemExit(f"invalid config {path}:\n  " + "\n  ".join(lines)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf-engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train from a YAML config")
    train.add_argument("config", type=Path)
    train.add_argument("--resume-from", type=Path, help="a checkpoint directory (…/checkpoints/step-N)")
    train.add_argument("--registry", type=Path, help="operator model registry (YAML/JSON)")
    train.add_argument("--cache-dir", type=Path, help="where built-in models are materialised")
    validate = sub.add_parser("validate", help="check a JSONL dataset and print its format")
    validate.add_argument("file", type=Path)
    args = parser.parse_args(argv)

    if args.command == "validate":
        from rlhf_engine.data.formats import DatasetError, load_jsonl

        try:
            parsed = load_jsonl(args.file)
        except DatasetError as err:
            for issue in err.issues:
                print(str(issue), file=sys.stderr)
            return 1
        print(json.dumps({"format": parsed.format, "num_examples": parsed.num_examples}))
        return 0

    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.run import run

    config = load_config(args.config)
    reporter = ConsoleReporter()
    result = run(config, reporter, registry=ModelRegistry.load(args.registry), cache_dir=args.cache_dir,
                 resume_from=args.resume_from)
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 speaks for the job
        return 0
    reporter._emit({"type": "result", "adapter_dir": str(result.adapter_dir), "merged_dir": str(result.merged_dir),
                    "steps": result.steps,
                    "trained_tokens": result.trained_tokens, "summary": result.summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
