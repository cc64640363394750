"""The client of the inference backend (RLHF_INFERENCE_URL): vLLM's OpenAI server, or the
built-in `python -m worker.serve`. The protocol, which both accept (docs/inference.md):

    POST /v1/load_lora_adapter  {"lora_name": N, "lora_path": P, "base_model_name": B}
    POST /v1/chat/completions   {"model": N, ...OpenAI's body}        (N: a base or a loaded name)

An adapter is loaded under its `ft:` name the first time this process serves it; afterwards it is
addressed by that name alone. A backend that answers 404 for a name we loaded has lost it (it
restarted), so the adapter is loaded again and the request sent once more. "Already loaded" from
vLLM (another API replica loaded it first) counts as loaded.

Errors become the envelope: backend unset 503 `inference_not_configured`, unreachable 503
`inference_backend_unavailable`, a bad answer 502 `inference_backend_error`; a 400 from the backend
is about the request (prompt longer than the context...) and is passed on with its message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Annotated

import httpx
from fastapi import Depends
from pydantic import ValidationError

from service.api.deps import SettingsDep
from service.api.errors import SERVER_ERROR, APIError, bad_request
from service.api.served_models import Served
from service.shared.chat_protocol import ChatCompletion
from service.shared.settings import Settings

log = logging.getLogger(__name__)

# Generating a long answer on a busy backend takes minutes; connecting to a live one does not.
TIMEOUT = httpx.Timeout(600.0, connect=5.0)


def _unavailable(why: str) -> APIError:
    return APIError(503, f"The inference backend is unavailable: {why}. Try again later.", type=SERVER_ERROR,
                    code="inference_backend_unavailable")


def _backend_error(why: str) -> APIError:
    return APIError(502, f"The inference backend answered with an error: {why}.", type=SERVER_ERROR,
                    code="inference_backend_error")


def _message(response: httpx.Response) -> str:
    """The error text of a backend's answer: OpenAI's envelope, vLLM's older flat one, or the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        return str(inner.get("message") or inner.get("detail") or body)[:500]
    return str(body)[:500]


class InferenceBackend:
    def __init__(self, url: str):
        # Accept the server's root or its OpenAI base URL (`.../v1`, as clients write it).
        self.url = url.rstrip("/").removesuffix("/v1")
        self.http = httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT)
        self._loaded: set[str] = set()

    async def complete(self, served: Served, body: dict) -> ChatCompletion:
        response = await self._send(served, body, stream=False)
        try:
            return ChatCompletion.model_validate_json(response.content)
        except ValidationError as err:
            log.warning("inference backend sent an unexpected completion: %s", err)
            raise _backend_error("the completion is not in OpenAI's shape") from None

    async def stream(self, served: Served, body: dict) -> AsyncIterator[bytes]:
        """The backend's SSE chunks, relayed line by line as they arrive. The status is known before
        this returns, so a refusal is still an ordinary error response."""
        return self._relay(await self._send(served, body, stream=True))

    async def _send(self, served: Served, body: dict, *, stream: bool) -> httpx.Response:
        for attempt in (1, 2):
            if served.adapter_dir is not None:
                await self._load(served)
            request = self.http.build_request("POST", "/v1/chat/completions", json={**body, "model": served.name})
            response = await self._call(request, stream=stream)
            if response.status_code == 200:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            if response.status_code == 404 and served.adapter_dir is not None and attempt == 1:
                self._loaded.discard(served.name)  # the backend restarted and forgot it: load again
                continue
            raise self._refusal(served, response)
        raise AssertionError("unreachable")

    async def _load(self, served: Served) -> None:
        if served.name in self._loaded:
            return
        response = await self._call(self.http.build_request("POST", "/v1/load_lora_adapter", json={
            "lora_name": served.name, "lora_path": str(served.adapter_dir), "base_model_name": served.base_model}))
        if response.status_code == 200 or (response.status_code == 400 and "already" in _message(response)):
            self._loaded.add(served.name)
            return
        if response.status_code in (404, 405):
            # vLLM registers the route only with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora.
            raise _unavailable("it does not load LoRA adapters at run time (vLLM: --enable-lora and "
                               "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)")
        log.warning("loading adapter %s from %s failed: %s %s", served.name, served.adapter_dir,
                    response.status_code, _message(response))
        raise _backend_error(f"it could not load the model's adapter ({response.status_code})")

    async def _call(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            return await self.http.send(request, stream=stream)
        except httpx.TimeoutException:
            raise _unavailable("it did not answer in time") from None
        except httpx.TransportError as err:
            log.warning("inference backend %s unreachable: %r", self.url, err)
            raise _unavailable(f"{self.url} cannot be reached") from None

    @staticmethod
    def _refusal(served: Served, response: httpx.Response) -> APIError:
        if response.status_code == 400:
            return bad_request(f"The inference backend refused the request: {_message(response)}")
        if response.status_code == 404:
            return APIError(404, f"Model {served.name!r} is not served by this deployment's inference backend.",
                            param="model", code="model_not_served")
        log.warning("inference backend answered %s: %s", response.status_code, _message(response))
        return _backend_error(f"status {response.status_code}")

    @staticmethod
    async def _relay(response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    yield f"{line}\n\n".encode()
        except httpx.TransportError as err:
            # Headers are gone already: end with an error chunk, which the openai client raises.
            log.warning("inference stream cut off: %r", err)
            error = _unavailable("the stream was cut off").body()
            yield f"data: {json.dumps(error)}\n\n".encode()
        finally:
            await response.aclose()


@lru_cache
def _backend(url: str) -> InferenceBackend:
    # One per process and URL: it holds the connection pool and the names of loaded adapters.
    return InferenceBackend(url)


def backend_for(settings: Settings) -> InferenceBackend:
    if not settings.inference_url:
        raise APIError(503, "Chat completions need an inference backend, and none is configured "
                            "(RLHF_INFERENCE_URL).", type=SERVER_ERROR, code="inference_not_configured")
    return _backend(settings.inference_url)


async def inference_dep(settings: SettingsDep) -> InferenceBackend:
    return backend_for(settings)


Inference = Annotated[InferenceBackend, Depends(inference_dep)]
