"""`POST /v1/chat/completions` end to end: the official `openai` client (strict mode) -> the API ->
a real `python -m worker.serve` on the tiny model, with a real LoRA adapter on disk for a job
marked succeeded (training is tested elsewhere; what is served is the business here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid

import httpx
import openai
import pytest
from sqlalchemy import select, update

from service.shared.artifacts import ArtifactStore
from service.shared.model_names import checkpoint_model, job_model_name
from service.shared.store.models import SUCCEEDED, CheckpointRow, JobRow, new_id, now
from service.shared.store.session import session_scope
from tests import infra
from tests.integration.helpers import MODEL, assert_envelope, dpo_body, upload
from tests.integration.tenants import Tenant, make_tenant, own_server

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def stack(start_api, make_database, tmp_path_factory, model_cache_dir):
    """The API and the built-in inference server, sharing one artifacts directory."""
    from service import migrate

    artifacts = tmp_path_factory.mktemp("chat-artifacts")
    port = infra.free_port()
    log_path = tmp_path_factory.mktemp("serve-logs") / "serve.log"
    serve = subprocess.Popen(
        [sys.executable, "-m", "worker.serve", "--host", "127.0.0.1", "--port", str(port), "--preload", MODEL],
        cwd=infra.REPO, env=infra.service_env(artifacts_dir=artifacts, model_cache_dir=model_cache_dir),
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    try:
        database_url = make_database()
        migrate.upgrade(database_url)
        api = start_api(database_url=database_url, queue=f"rlhf-chat-{uuid.uuid4().hex[:8]}",
                        artifacts_dir=str(artifacts), inference_url=f"http://127.0.0.1:{port}/v1")
        try:
            infra.wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200,
                             120, "worker.serve", serve)
        except Exception as err:
            raise RuntimeError(f"{err}\n{log_path.read_text(errors='replace')}") from None
        yield api
    finally:
        infra.stop(serve)


def _random_adapter(model_dir, out) -> None:
    """A LoRA adapter with non-zero B (a fresh one is the identity), saved as the worker saves one."""
    import torch

    from rlhf_engine.export import save_adapter
    from rlhf_engine.models.loading import add_lora, load_causal_lm
    from rlhf_engine.spec import LoraSpec

    model = add_lora(load_causal_lm(model_dir), LoraSpec(r=4, alpha=16), seed=0)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    save_adapter(model, out, MODEL)


@pytest.fixture(scope="module")
def owner(stack, model_cache_dir) -> tuple[Tenant, str, str]:
    """A project with a succeeded job whose adapter (and step-1 checkpoint) are on disk; returns the
    tenant, the model name and the checkpoint name."""
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models.loading import materialise

    tenant = make_tenant(stack)
    with tenant.client(stack) as client:
        job_id = client.post("/v1/fine_tuning/jobs", json=dpo_body(upload(client).json()["id"])).json()["id"]
    store = ArtifactStore(stack.settings["artifacts_dir"])
    tiny = materialise(ModelRegistry.load().get(MODEL), model_cache_dir)
    _random_adapter(tiny, store.path(store.adapter_key(job_id)))
    ckpt_key = store.checkpoint_key(job_id, 1)
    shutil.copytree(store.path(store.adapter_key(job_id)), store.path(f"{ckpt_key}/adapter"))
    with session_scope(stack.settings["database_url"]) as s:
        name = job_model_name(s.scalar(select(JobRow).where(JobRow.id == job_id)))
        s.execute(update(JobRow).where(JobRow.id == job_id).values(status=SUCCEEDED, fine_tuned_model=name,
                                                                   finished_at=now()))
        s.add(CheckpointRow(id=new_id("ftckpt"), job_id=job_id, step_number=1, metrics={}, storage_key=ckpt_key))
    return tenant, name, checkpoint_model(name, 1)


def _client(server, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=tenant.key, max_retries=0, timeout=60,
                         _strict_response_validation=True)


def test_base_and_fine_tuned_models_answer_through_the_official_client(stack, owner):
    tenant, model, checkpoint = owner
    client = _client(stack, tenant)
    replies = {}
    for name in (MODEL, model, checkpoint):
        done = client.chat.completions.create(model=name, messages=HELLO, temperature=0, max_tokens=12)
        assert done.object == "chat.completion" and done.model == name and len(done.choices) == 1
        assert done.choices[0].message.role == "assistant" and done.choices[0].finish_reason in ("stop", "length")
        assert done.usage.completion_tokens <= 12
        assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
        replies[name] = done.choices[0].message.content
    # Greedy: the adapter's non-zero update changes the answer; the checkpoint holds the same adapter.
    assert replies[model] != replies[MODEL]
    assert replies[checkpoint] == replies[model]
    # Greedy is deterministic, and max_completion_tokens is the same limit under its new name.
    again = client.chat.completions.create(model=model, messages=HELLO, temperature=0, max_completion_tokens=12)
    assert again.choices[0].message.content == replies[model]


def test_streaming_gives_openai_chunks_ending_with_done(stack, owner):
    tenant, model, _ = owner
    client = _client(stack, tenant)
    for name in (MODEL, model):
        whole = client.chat.completions.create(model=name, messages=HELLO, temperature=0, max_tokens=12)
        chunks = list(client.chat.completions.create(model=name, messages=HELLO, temperature=0, max_tokens=12,
                                                     stream=True, stream_options={"include_usage": True}))
        assert all(c.object == "chat.completion.chunk" and c.model == name for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # On the wire: server-sent `data:` lines, the last one OpenAI's terminator.
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", headers={"Authorization": f"Bearer {tenant.key}"},
                      json={"model": model, "messages": HELLO, "max_tokens": 4, "stream": True}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"


def test_sampling_parameters(stack, owner):
    tenant, model, _ = owner
    client = _client(stack, tenant)
    sampled = [client.chat.completions.create(model=model, messages=HELLO, n=3, temperature=1.0, top_p=0.9,
                                              seed=7, max_tokens=8) for _ in range(2)]
    texts = [[c.message.content for c in s.choices] for s in sampled]
    assert [c.index for c in sampled[0].choices] == [0, 1, 2]
    assert texts[0] == texts[1]  # the same seed, the same samples
    assert len(set(texts[0])) > 1  # each choice its own stream

    short = client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3

    greedy = client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0, max_tokens=12)
    text = greedy.choices[0].message.content
    stop = text.strip()[len(text.strip()) // 2:][:3]
    cut = client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0, max_tokens=12, stop=[stop])
    assert cut.choices[0].message.content == text[:text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_other_projects_and_unknown_models_are_404(stack, owner):
    _, model, checkpoint = owner
    other = make_tenant(stack)
    client = _client(stack, other)
    for name in (model, checkpoint, "no-such-model", f"{model}x"):
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model=name, messages=HELLO, max_tokens=4)
        assert caught.value.body["code"] == "not_found" and caught.value.body["param"] == "model"
    with other.client(stack) as raw:  # an unsupported parameter is refused, not ignored
        assert_envelope(raw.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "tools": []}),
                        400, param="tools", code="unknown_parameter")


def test_without_a_backend_it_is_503(idle_api):
    # The idle API has no RLHF_INFERENCE_URL.
    with httpx.Client(base_url=idle_api.url, timeout=30) as client:
        answer = client.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO})
    assert "RLHF_INFERENCE_URL" in assert_envelope(answer, 503, code="inference_not_configured")["message"]


def test_backend_down_is_503_and_the_rate_limit_applies(start_api, make_database, tmp_path_factory):
    down = own_server(start_api, make_database, tmp_path_factory, rate_limit_per_minute=1, rate_limit_burst=1,
                      inference_url=f"http://127.0.0.1:{infra.free_port()}")
    tenant = make_tenant(down)
    with tenant.client(down) as client:
        body = {"model": MODEL, "messages": HELLO}
        assert_envelope(client.post("/v1/chat/completions", json=body), 503, code="inference_backend_unavailable")
        limited = client.post("/v1/chat/completions", json=body)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["retry-after"]
