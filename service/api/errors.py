"""Every error leaves the API in OpenAI's envelope: `{"error": {"message", "type", "param", "code"}}`.

Conventions (one table, so clients and tests can rely on them):

    status  type                    code (examples)                      when
    400     invalid_request_error   invalid_value, unknown_parameter,    bad body, query or upload
                                    missing_required_parameter,
                                    invalid_json, <dataset issue code>
    401     invalid_request_error   missing_api_key, invalid_api_key     no key / unknown or revoked key
    404     invalid_request_error   not_found, unknown_url               unknown id or route, or another
                                                                         project's id (never 403)
    405     invalid_request_error   method_not_allowed                   wrong verb on a known route
    409     invalid_request_error   job_not_cancellable, file_in_use,    the object's state forbids it
                                    adapter_not_ready
    413     invalid_request_error   file_too_large, body_too_large       upload / body over the limit
    429     requests                rate_limit_exceeded                  per-key rate limit; Retry-After
    500     server_error            internal_error                       a bug; details only in the log
    503     server_error            dependency_unavailable               /readyz: database, broker or
                                                                         artifact store down
    503     server_error            artifact_store_unavailable           the S3 bucket could not be used
    503     server_error            inference_not_configured,            chat completions without an
                                    inference_backend_unavailable        RLHF_INFERENCE_URL, or it is down
    502     server_error            inference_backend_error              the inference backend failed

OpenAI itself answers body validation with 400 (not FastAPI's 422), so we do too, and `param` is
the dotted path of the offending field (`method.dpo.hyperparameters.beta`).

4xx answers carry `x-should-retry: false`: the official client otherwise retries 409s, and
repeating a request that the state of an object refused cannot help. 429 is the exception: there
the client should wait `Retry-After` seconds and try again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """Raise from anywhere in a request; the handler turns it into the envelope."""

    def __init__(self, status: int, message: str, type: str = INVALID_REQUEST,
                 param: str | None = None, code: str | None = None, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.extra = param, code, extra or {}
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code, **self.extra}}


def not_found(kind: str, object_id: str, param: str = "id") -> APIError:
    return APIError(404, f"No such {kind}: {object_id!r}", param=param, code="not_found")


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def artifact_store_unavailable(what: str) -> APIError:
    """The bucket (RLHF_ARTIFACTS_S3_BUCKET) failed; the details are in the log, not the answer."""
    return APIError(503, f"The artifact store is unavailable: {what}. Try again later.", type=SERVER_ERROR,
                    code="artifact_store_unavailable")


def error_response(err: APIError) -> JSONResponse:
    headers = {"x-should-retry": "false"} if err.status < 500 and err.status != 429 else {}
    return JSONResponse(err.body(), status_code=err.status, headers={**headers, **err.headers})


# ---- the envelope in the OpenAPI schema (clients and schemathesis check responses against it) ----

class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorDetail


# Declared on every route (FastAPI(responses=...)): any route can answer these.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorEnvelope, "description": "The request was refused (error envelope)."},
    "5XX": {"model": ErrorEnvelope, "description": "Server or dependency error (error envelope)."},
}


# ---- pydantic / FastAPI validation errors --------------------------------------------------------

_CODES = {"extra_forbidden": "unknown_parameter", "missing": "missing_required_parameter",
          "json_invalid": "invalid_json"}


def _param_path(loc: tuple, given: Any, missing: bool) -> str | None:
    """The dotted path of the field the user wrote, from pydantic's `loc`.

    `loc` also holds pydantic's own labels (union members like `int` or `literal['auto']`), which
    are not fields. Walking the submitted value along `loc` keeps exactly the parts the user can
    see; a missing field is the one part that is legitimately absent from the input.
    """
    parts: list[str] = []
    node = given
    for i, key in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, Mapping) and key in node:  # a JSON object, or a multipart form
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        elif missing and last and isinstance(key, str):
            pass
        else:
            break
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(parts).lstrip(".") or None


def _clean(msg: str) -> str:
    # pydantic prefixes messages from our validators with "Value error, ".
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if msg.startswith("Expected UploadFile"):  # FastAPI's words name a Python class
        return "send a file part (multipart/form-data), not a text field"
    return msg


def _locate(error: dict, body: Any) -> str | None:
    """`param` for one pydantic error: a query/path parameter's name or a dotted body path."""
    loc = tuple(error.get("loc") or ())
    source, loc = (loc[0], loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else (None, loc)
    if source in ("query", "path", "header"):
        return str(loc[0]) if loc else None
    if error.get("type") == "json_invalid":
        return None  # loc holds a character offset, not a field
    return _param_path(loc, body if source == "body" else None, missing=error.get("type") == "missing")


def validation_error(exc: RequestValidationError) -> APIError:
    """The first problem, in OpenAI's words (400, `param` = the field's path)."""
    errors = exc.errors() or [{"loc": (), "msg": "invalid request", "type": "value_error"}]
    body = getattr(exc, "body", None)
    first, kind = errors[0], errors[0].get("type", "value_error")
    param = _locate(first, body)
    if kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif kind == "missing":
        message = f"Missing required parameter: '{param}'."
    elif kind == "json_invalid":
        message = "We could not parse the JSON body of your request. Send valid JSON."
    elif kind == "model_attributes_type" and param is None:
        # The whole body is not an object. FastAPI hands over raw bytes when the Content-Type was
        # not JSON, so the body was never parsed: say which header is missing.
        message = "The request body must be a JSON object" + (
            ", sent with 'Content-Type: application/json'." if isinstance(first.get("input"), bytes) else ".")
    else:
        # A union field ("auto" or a number) fails once per member: name every alternative.
        reasons = [_clean(e.get("msg", "invalid value")) for e in errors
                   if e.get("type") not in ("extra_forbidden", "missing") and _locate(e, body) == param]
        where = f"'{param}'" if param else "the request"
        message = f"Invalid value for {where}: {' or '.join(dict.fromkeys(reasons))}"
    return bad_request(message, param=param, code=_CODES.get(kind, "invalid_value"))


# ---- handlers ------------------------------------------------------------------------------------

_HTTP_CODES = {404: "unknown_url", 405: "method_not_allowed", 413: "file_too_large"}


def install(app: FastAPI, authenticate: Callable[[Request], APIError | None] | None = None) -> None:
    """`authenticate(request)`: the refusal a request without valid credentials gets (service/api/auth.py
    `refusal`), asked before a validation error is described, since those can be raised before
    the route's own auth dependency runs."""
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if authenticate is not None and (refused := await run_in_threadpool(authenticate, request)):
            return error_response(refused)
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing errors (unknown URL, wrong verb) reach us as plain HTTP exceptions.
        if exc.status_code == 404:
            message = f"Unknown request URL: {request.method} {request.url.path}."
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}."
        else:
            message = str(exc.detail)
        err_type = SERVER_ERROR if exc.status_code >= 500 else INVALID_REQUEST
        return error_response(APIError(exc.status_code, message, type=err_type,
                                 code=_HTTP_CODES.get(exc.status_code)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never leak internals to the client; the traceback goes to the log.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(APIError(500, "The server had an error while processing your request.",
                                 type=SERVER_ERROR, code="internal_error"))
