"""An OpenAI-compatible server over local engines: `/v1/chat/completions` and `/v1/models`.

`triplesmith serve` runs it (Starlette on uvicorn), so a local model, and any fine-tuned adapter
served beside it by name (as vLLM's `--lora-modules` does), answer the same requests as vLLM,
llama.cpp's server or OpenAI: greedy decoding, `response_format` with a JSON schema enforced by
the engine's grammar, per-token `logprobs`. Concurrent requests go through the engine's
coalescing `submit`, so they share batches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from triplesmith.chains.engines.base import Engine, Generation, GenerationOptions
from triplesmith.errors import ChainError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A name clients ask for, and the local model (and adapter) that answers it."""

    name: str
    model: str
    adapter: str | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part.get("text", "")) for part in self.content)


class ChatRequest(BaseModel):
    """The part of OpenAI's chat-completion request this server honours; fields it cannot
    honour (sampling, several choices, streaming, tools) are refused by name, never ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int = 1
    stream: bool = False
    logprobs: bool = False
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None

    def unsupported(self) -> str | None:
        if self.temperature not in (None, 0, 0.0):
            return "temperature must be 0: this server decodes greedily"
        if self.n != 1:
            return "n must be 1"
        if self.stream:
            return "streaming is not supported; send stream=false"
        if self.tools:
            return "tools are not supported; ask for JSON with response_format json_schema"
        kind = (self.response_format or {}).get("type", "text")
        if kind not in ("text", "json_schema"):
            return f"response_format type {kind!r} is not supported; use text or json_schema"
        return None

    def schema(self) -> str | None:
        """The JSON schema the answer must follow, as text; None for free text."""
        if not self.response_format or self.response_format.get("type") != "json_schema":
            return None
        spec = self.response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ChainError("response_format.json_schema.schema must be a JSON schema object")
        return json.dumps(schema)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def completion(name: str, result: Generation, logprobs: bool) -> dict[str, Any]:
    """An OpenAI chat.completion object for one generation."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": result.text},
        "finish_reason": "length" if result.finish_reason == "length" else "stop",
        "logprobs": None,
    }
    if logprobs:
        choice["logprobs"] = {
            "content": [
                {
                    "token": piece,
                    "logprob": logprob,
                    "bytes": list(piece.encode()),
                    "top_logprobs": [],
                }
                for piece, logprob in zip(result.pieces, result.logprobs, strict=True)
            ]
        }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [choice],
        "usage": {
            "prompt_tokens": result.tokens_in,
            "completion_tokens": result.tokens_out,
            "total_tokens": result.tokens_in + result.tokens_out,
        },
    }


def build_app(engines: dict[str, Engine], options: GenerationOptions) -> Starlette:
    """The server's app for loaded engines by served name; `options` are the decoding
    defaults (a request's `max_tokens` and `response_format` override theirs)."""

    async def models(request: Request) -> JSONResponse:
        data = [{"id": name, "object": "model", "owned_by": "triplesmith"} for name in engines]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "models": list(engines)})

    async def chat(request: Request) -> JSONResponse:
        try:
            body = ChatRequest.model_validate(await request.json())
        except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"invalid request: {exc}")
        engine = engines.get(body.model)
        if engine is None:
            return _error(404, f"model {body.model!r} is not served; use one of {list(engines)}")
        problem = body.unsupported()
        if problem:
            return _error(400, problem)
        try:
            schema = body.schema()
        except ChainError as exc:
            return _error(400, str(exc))
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        wanted = body.max_completion_tokens or body.max_tokens or options.max_new_tokens
        request_options = replace(
            options, max_new_tokens=wanted, constrained=schema is not None, json_schema=schema
        )
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        future = engine.submit(messages, engine.count_tokens(last_user), request_options)
        try:
            result = await asyncio.wrap_future(future)
        except ChainError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # the engine's own failure: a server error, said plainly
            log.exception("generation failed")
            return _error(500, f"generation failed: {exc}", "server_error")
        return JSONResponse(completion(body.model, result, body.logprobs))

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
