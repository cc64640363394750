"""OpenAI's chat-completions shapes, as the API accepts them and as an inference backend answers.

One request model for both ends: the API validates a user's body with it and forwards
`for_backend(...)`, and the built-in server (`python -m worker.serve`) reads that same body. vLLM's
OpenAI server reads it too (docs/inference.md). Only the parameters we can honour on every backend
are accepted; anything else (tools, logprobs, response_format...) is refused with a 400 naming the
field rather than silently ignored.

Responses are the subset of OpenAI's fields that every backend sends; extra fields a backend adds
(vLLM's `prompt_logprobs`, `kv_transfer_params`...) are dropped when the API re-validates a
completion, so clients see OpenAI's shape whatever serves it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_CHOICES = 16  # `n`; OpenAI allows 128, but every choice is decoded by one small server here
MAX_STOP_SEQUENCES = 4  # as OpenAI


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        # Text parts are joined as they are, as the training formats do (rlhf_engine/data/formats.py).
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str = Field(min_length=1, max_length=400)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted for compatibility; not forwarded

    def stop_list(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def token_limit(self) -> int | None:
        # `max_completion_tokens` is OpenAI's current name, `max_tokens` the deprecated one.
        return self.max_completion_tokens or self.max_tokens

    def for_backend(self, model: str) -> dict:
        """The body sent to the inference backend, asking for `model` (the name it serves).

        OpenAI's defaults are written out (temperature 1, top_p 1, n 1): vLLM otherwise takes the
        model's generation_config.json defaults, and the same request must sample the same way
        whichever backend serves it. Messages go as plain text with `developer` read as `system`,
        which every chat template knows."""
        body: dict = {
            "model": model,
            "messages": [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                         for m in self.messages],
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "n": self.n or 1,
            "stream": bool(self.stream),
        }
        if self.token_limit() is not None:
            body["max_tokens"] = self.token_limit()
        if self.seed is not None:
            body["seed"] = self.seed
        if stops := self.stop_list():
            body["stop"] = stops
        if self.stream and self.stream_options is not None:
            body["stream_options"] = self.stream_options.model_dump()
        return body


# ---- responses -----------------------------------------------------------------------------------

class _Response(BaseModel):
    # Every field is always sent, so every field is required in the OpenAPI (service/api/schemas.py).
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class Choice(_Response):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class Delta(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(_Response):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(_Response):
    """One `data:` line of a streamed completion; the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
