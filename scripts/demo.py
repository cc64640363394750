"""The demo: the whole service on the embedded default, driven through its HTTP API.

Starts `uvicorn service.app:app` and `celery -A worker.celery_app worker` on SQLite and kombu's
SQLAlchemy transport (files under .rlhf/demo), uploads the bundled `concise` preference dataset,
trains a DPO LoRA adapter on smollm2-135m-instruct and downloads it. It ends by chatting with the
base and the fine-tuned model through `/v1/chat/completions` with the official `openai` client,
served by `python -m worker.serve` (RLHF_INFERENCE_URL): all 16 held-out questions, a before/after
table of the preferred property and the key-fact rate, and the first answers as they came.
Everything it prints comes from this run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runs from a checkout even before `pip install -e .`
HOME = REPO / ".rlhf" / "demo"
DATA = REPO / "rlhf_engine" / "datasets"
MODEL = "smollm2-135m-instruct"
PORT = int(os.environ.get("DEMO_PORT", "8765"))
SERVE_PORT = int(os.environ.get("DEMO_SERVE_PORT", "8766"))  # the built-in inference server
HYPERPARAMETERS = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 4, "beta": 0.3,  # bench/README.md
                   "loss_type": "hinge"}


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def chat(fine_tuned: str, serve: subprocess.Popen) -> None:
    """The user's last step, as with OpenAI: chat with the fine-tuned model by its name. Every
    held-out question of the dataset goes to the base and to the fine-tuned model (greedy); the
    table counts what DPO was asked for (one sentence of at most 15 words) and whether the answer
    still holds the key fact (rlhf_engine/evals/concise.py), and the first three answers are shown
    as they came, not picked."""
    from openai import OpenAI

    from rlhf_engine.evals.concise import has_property, held_out, is_correct

    for _ in range(300):  # the inference server loads the base once
        if serve.poll() is not None:
            raise RuntimeError((HOME / "serve.log").read_text()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{SERVE_PORT}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    client = OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key="local")
    questions = held_out()
    print(f"\n[demo] {len(questions)} held-out questions through /v1/chat/completions: {MODEL} vs {fine_tuned}",
          flush=True)
    t = time.time()
    replies = [[client.chat.completions.create(model=name, messages=[{"role": "user", "content": q}],
                                               temperature=0, max_tokens=64).choices[0].message.content
                for name in (MODEL, fine_tuned)] for q, _ in questions]
    n = len(questions)

    def rate(test, side: int) -> str:
        return f"{sum(test(r[side], key) for r, (_, key) in zip(replies, questions)) / n:.2f}"

    print(f"\n| held-out ({n} questions, {time.time() - t:.0f}s of chat) | base | fine-tuned |\n|---|---|---|")
    print(f"| one sentence, <= 15 words (preferred) | {rate(lambda r, _: has_property(r), 0)} "
          f"| {rate(lambda r, _: has_property(r), 1)} |")
    print(f"| contains the key fact | {rate(is_correct, 0)} | {rate(is_correct, 1)} |")
    for (q, _), (base, tuned) in list(zip(questions, replies))[:3]:
        print(f"\nQ: {q}\n  base:       {base}\n  fine-tuned: {tuned}")


def main() -> int:
    t0 = time.time()
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "RLHF_DATABASE_URL": f"sqlite:///{HOME}/rlhf.db",
           "RLHF_BROKER_URL": f"sqla+sqlite:///{HOME}/broker.db",
           "RLHF_ARTIFACTS_DIR": str(HOME / "artifacts"),
           "RLHF_MODEL_CACHE_DIR": str(REPO / ".rlhf" / "models"),
           "RLHF_INFERENCE_URL": f"http://127.0.0.1:{SERVE_PORT}"}
    os.environ.update(env)

    # The model cache the worker and the inference server reuse.
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models.loading import materialise

    print(f"[demo] preparing {MODEL} (the first run converts the packaged GGUF, ~1 min)", flush=True)
    materialise(ModelRegistry.load().get(MODEL))

    api = start([sys.executable, "-m", "uvicorn", "service.app:app", "--port", str(PORT)], env, HOME / "api.log")
    worker = start([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO"],
                   env, HOME / "worker.log")
    # Started now so that it has loaded the base by the time the job is done.
    serve = start([sys.executable, "-m", "worker.serve", "--port", str(SERVE_PORT), "--preload", MODEL],
                  env, HOME / "serve.log")
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{PORT}/v1", timeout=60)
        for _ in range(100):
            try:
                if client.get("/files").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        files = {}
        for name in ("concise_train.jsonl", "concise_eval.jsonl"):
            r = client.post("/files", files={"file": (name, (DATA / name).read_bytes())}, data={"purpose": "fine-tune"})
            r.raise_for_status()
            files[name] = r.json()["id"]
            print(f"[demo] uploaded {name}: {r.json()['num_examples']} examples -> {files[name]}", flush=True)
        job = client.post("/fine_tuning/jobs", json={
            "model": MODEL, "training_file": files["concise_train.jsonl"],
            "validation_file": files["concise_eval.jsonl"], "seed": 0, "suffix": "concise",
            "method": {"type": "dpo", "dpo": {"hyperparameters": HYPERPARAMETERS}}}).json()
        print(f"[demo] job {job['id']} {job['status']}", flush=True)

        seen = set()
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)
            job = client.get(f"/fine_tuning/jobs/{job['id']}").json()
            for event in reversed(client.get(f"/fine_tuning/jobs/{job['id']}/events",
                                             params={"limit": 50}).json()["data"]):
                if event["id"] not in seen:
                    seen.add(event["id"])
                    print(f"[demo]   {event['message']}", flush=True)
            if worker.poll() is not None:
                print((HOME / "worker.log").read_text()[-3000:])
                return 1
        if job["status"] != "succeeded":
            print(f"[demo] job ended {job['status']}: {json.dumps(job['error'])}")
            return 1

        archive = client.get(f"/fine_tuning/jobs/{job['id']}/adapter")
        archive.raise_for_status()
        adapter_dir = HOME / "adapter"
        zipfile.ZipFile(io.BytesIO(archive.content)).extractall(adapter_dir)
        print(f"[demo] adapter downloaded to {adapter_dir}: {sorted(p.name for p in adapter_dir.iterdir())}")
        chat(job["fine_tuned_model"], serve)
    finally:
        for proc in (serve, worker, api):
            proc.terminate()
        for proc in (serve, worker, api):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()

    final = job.get("result") or {}
    print(f"\n[demo] eval reward accuracy {final.get('eval/rewards/accuracies', float('nan')):.2f}, "
          f"eval margin {final.get('eval/rewards/margins', float('nan')):.3f}; wall time {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
