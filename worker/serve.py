"""`python -m worker.serve --host H --port P`: the built-in inference server of the embedded stack.

It speaks the protocol the API forwards chat completions in (docs/inference.md), the part of vLLM's
OpenAI server the API uses:

    POST /v1/load_lora_adapter    {"lora_name", "lora_path", "base_model_name"}
    POST /v1/unload_lora_adapter  {"lora_name"}
    POST /v1/chat/completions     OpenAI's body; `model` a registry base or a loaded lora_name
    GET  /v1/models, GET /health

Models: worker/model_pool.py (registry bases from RLHF_MODEL_REGISTRY, materialised under
RLHF_MODEL_CACHE_DIR; adapters only from under RLHF_ARTIFACTS_DIR). A streamed answer is generated
whole and then sent in token-sized chunks: the chunks are OpenAI's, but unlike vLLM's they do not
arrive while the model is still writing. Small models on one machine are what this server is for;
production serves through vLLM (docker-compose.yml).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from rlhf_engine.model_registry import ModelRegistry
from service.shared.chat_protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    Usage,
)
from service.shared.settings import get_settings
from worker.model_pool import BadRequest, Generation, ModelPool, UnknownName


class LoadAdapter(BaseModel):
    lora_name: str
    lora_path: str
    base_model_name: str  # vLLM ignores it (it serves one base); we serve several


class UnloadAdapter(BaseModel):
    lora_name: str


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}},
                        status_code=status)


def create_app(pool: ModelPool) -> FastAPI:
    app = FastAPI(title="rlhf built-in inference server")

    @app.exception_handler(UnknownName)
    async def _unknown(_: Request, exc: UnknownName) -> JSONResponse:
        return _error(404, f"The model `{exc.args[0]}` does not exist.", "model_not_found")

    @app.exception_handler(BadRequest)
    async def _bad(_: Request, exc: BadRequest) -> JSONResponse:
        return _error(400, str(exc), "invalid_value")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        return _error(400, f"{'.'.join(map(str, first.get('loc', ())))}: {first.get('msg', 'invalid request')}",
                      "invalid_value")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "rlhf",
                                            "parent": parent} for name, parent in pool.names()]}

    # Plain `def` routes: FastAPI runs them in its thread pool, so loading and generating never
    # block the event loop; the pool serialises what shares a model.
    @app.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
    def load_adapter(body: LoadAdapter) -> str:
        pool.register_adapter(body.lora_name, body.lora_path, body.base_model_name)
        return f"Success: LoRA adapter '{body.lora_name}' added successfully."

    @app.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
    def unload_adapter(body: UnloadAdapter) -> str:
        pool.unregister_adapter(body.lora_name)
        return f"Success: LoRA adapter '{body.lora_name}' removed successfully."

    @app.post("/v1/chat/completions")
    def chat(body: ChatCompletionRequest):
        generation = pool.generate(
            body.model, [("system" if m.role == "developer" else m.role, m.text()) for m in body.messages],
            max_tokens=body.token_limit(), temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed, stop=body.stop_list(), n=body.n or 1)
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(_chunks(generation, meta, usage), media_type="text/event-stream")
        return ChatCompletion(**meta, usage=_usage(generation), choices=[
            Choice(index=i, message=AssistantMessage(content=r.text), finish_reason=r.finish_reason)
            for i, r in enumerate(generation.replies)])

    return app


def _usage(generation: Generation) -> Usage:
    completion = sum(r.completion_tokens for r in generation.replies)
    return Usage(prompt_tokens=generation.prompt_tokens, completion_tokens=completion,
                 total_tokens=generation.prompt_tokens + completion)


def _chunks(generation: Generation, meta: dict, include_usage: bool) -> Iterator[str]:
    """OpenAI's stream: per choice a role chunk, its content pieces and a finish chunk; with
    `stream_options.include_usage` a last chunk without choices carrying the usage; then [DONE]."""
    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        return f"data: {ChatCompletionChunk(**meta, choices=choices, usage=usage).model_dump_json()}\n\n"

    for i, reply in enumerate(generation.replies):
        yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
        for piece in reply.pieces:
            yield chunk([ChunkChoice(index=i, delta=Delta(content=piece))])
        yield chunk([ChunkChoice(index=i, delta=Delta(), finish_reason=reply.finish_reason)])
    if include_usage:
        yield chunk([], _usage(generation))
    yield "data: [DONE]\n\n"


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m worker.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--preload", action="append", default=[], metavar="MODEL",
                        help="registry model to load before serving (repeatable); others load on first use")
    parser.add_argument("--max-loaded-adapters", type=int, default=8,
                        help="LoRA adapters kept in memory per base model (least recently used dropped)")
    parser.add_argument("--device", default=None, help="cuda, cpu... (default: cuda when available)")
    args = parser.parse_args(argv)

    settings = get_settings()
    pool = ModelPool(ModelRegistry.load(settings.model_registry), settings.model_cache_dir, settings.artifacts_dir,
                     device=args.device, max_loaded_adapters=args.max_loaded_adapters)
    for name in args.preload:
        pool.base(name)
    print(json.dumps({"msg": "inference server ready", "host": args.host, "port": args.port,
                      "models": [n for n, _ in pool.names()]}), flush=True)
    uvicorn.run(create_app(pool), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
