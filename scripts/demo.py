"""The demo: the whole service on the embedded default, driven through its HTTP API.

Starts `uvicorn service.app:app` and `celery -A worker.celery_app worker` on SQLite and kombu's
SQLAlchemy transport (files under .rlhf/demo), uploads the bundled `concise` preference dataset,
trains a DPO LoRA adapter on smollm2-135m-instruct, downloads it, and prints a held-out answer
before and after. It ends by chatting with the base and the fine-tuned model through
`/v1/chat/completions` with the official `openai` client, served by `python -m worker.serve`
(RLHF_INFERENCE_URL). Everything it prints comes from this run.
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
HYPERPARAMETERS = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 5, "beta": 0.1}
QUESTIONS = ["What is the capital of Portugal?", "How many legs does a spider have?"]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def chat(fine_tuned: str, serve: subprocess.Popen) -> None:
    """The user's last step, as with OpenAI: chat with the fine-tuned model by its name."""
    from openai import OpenAI

    for _ in range(300):  # the inference server loads the base once
        if serve.poll() is not None:
            raise RuntimeError((HOME / "serve.log").read_text()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{SERVE_PORT}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    client = OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key="local")
    print(f"\n[demo] chat through /v1/chat/completions: {MODEL} vs {fine_tuned}")
    for q in QUESTIONS:
        t = time.time()
        replies = [client.chat.completions.create(model=name, messages=[{"role": "user", "content": q}],
                                                  temperature=0, max_tokens=64).choices[0].message.content
                   for name in (MODEL, fine_tuned)]
        print(f"Q: {q}\n  base:       {replies[0]}\n  fine-tuned: {replies[1]}   ({time.time() - t:.1f}s for both)")


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

    # The base model's answers first (this also materialises the model cache the worker reuses).
    from rlhf_engine.generate import answer
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models.loading import load_causal_lm, load_tokenizer, materialise

    print(f"[demo] preparing {MODEL} (the first run converts the packaged GGUF, ~1 min)", flush=True)
    model_dir = materialise(ModelRegistry.load().get(MODEL))
    tokenizer = load_tokenizer(model_dir)
    base = load_causal_lm(model_dir).eval()
    before = {q: answer(base, tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS}

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

    from peft import PeftModel

    tuned = PeftModel.from_pretrained(load_causal_lm(model_dir), adapter_dir).eval()
    for q in QUESTIONS:
        print(f"\nQ: {q}\n  before: {before[q]}\n"
              f"  after:  {answer(tuned, tokenizer, [{'role': 'user', 'content': q}])}")
    final = job.get("result") or {}
    print(f"\n[demo] eval reward accuracy {final.get('eval/rewards/accuracies', float('nan')):.2f}, "
          f"eval margin {final.get('eval/rewards/margins', float('nan')):.3f}; wall time {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
