"""`POST /v1/chat/completions`: chat with a registry model or one of the project's fine-tuned ones.

The API never loads weights: it checks the caller may use the model (service/api/served_models.py)
and forwards the request to the inference backend (service/api/inference.py), relaying its answer
in OpenAI's shapes, `stream: true` as OpenAI's server-sent chunks ending with `data: [DONE]`.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from rlhf_engine.model_registry import ModelRegistry
from service.api import served_models
from service.api.auth import CallerDep
from service.api.deps import DB, Artifacts, Registry
from service.api.inference import Inference
from service.shared.artifacts import ArtifactStore
from service.shared.chat_protocol import ChatCompletion, ChatCompletionRequest

router = APIRouter(prefix="/chat", tags=["chat"])

_STREAM = {200: {"content": {"text/event-stream": {}},
                 "description": "With `stream: true`: chat.completion.chunk objects as server-sent events."}}


def _resolve(db: Session, registry: ModelRegistry, store: ArtifactStore, project_id: str,
             model: str) -> served_models.Served:
    try:
        return served_models.resolve(db, registry, store, project_id, model)
    finally:
        # Give the connection back before the backend is asked: an answer can take a while.
        db.commit()


# `async`: a completion can take seconds to minutes, and a worker thread held for each would starve
# every other route of the thread pool; the database lookup is the one part sent to it. The caller
# comes first: a request without a valid key learns nothing, not even whether a backend is set.
@router.post("/completions", response_model=ChatCompletion, responses=_STREAM)
async def create_chat_completion(body: ChatCompletionRequest, caller: CallerDep, backend: Inference, db: DB,
                                 registry: Registry, store: Artifacts):
    served = await run_in_threadpool(_resolve, db, registry, store, caller.project_id, body.model)
    request = body.for_backend(served.name)
    if body.stream:
        return StreamingResponse(await backend.stream(served, request), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})
    return await backend.complete(served, request)
