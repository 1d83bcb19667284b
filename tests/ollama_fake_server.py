"""A loopback fake of Ollama's REST API (`POST /api/chat`, `GET /api/tags`, `GET /api/version`).

It answers in the shapes the `ollama` client (under langchain-ollama's `ChatOllama`) reads:
newline-delimited JSON chunks when `stream` is true (the client's default), one object when it
is false; the last chunk carries `done`, `done_reason` and the token counts
(`prompt_eval_count`, `eval_count`); `options.num_predict` caps the answer (`done_reason:
"length"`); an unknown model gets Ollama's 404 `{"error": "model \"x\" not found..."}`. Every
request is recorded:

    fake = FakeOllama(content=lambda body: "[]", models=("llama3.2",))
    with fake as base_url:           # "http://127.0.0.1:PORT"
        ...
    fake.requests[0].json["format"]  # the JSON schema ChatOllama asked for
"""

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None


def _tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+|\s+", text)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeOllama:
    """A threaded Ollama API fake on 127.0.0.1; use as `with FakeOllama() as base_url:`.

    Args:
        content: the assistant answer (a string, or a function of the request body).
        models: the models it has pulled (others get Ollama's 404); empty: any model.
    """

    def __init__(
        self,
        content: str | Callable[[dict[str, Any]], str] = "[]",
        models: Sequence[str] = (),
    ) -> None:
        self.content = content
        self.models = tuple(models)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def chats(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == "/api/chat"]

    def __enter__(self) -> str:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _known(self, model: str) -> bool:
        return (
            not self.models or model in self.models or model.removesuffix(":latest") in self.models
        )

    def chat_chunks(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The answer to a chat request as Ollama streams it: content chunks, then `done`."""
        content = self.content(body) if callable(self.content) else self.content
        tokens = _tokens(content)
        limit = (body.get("options") or {}).get("num_predict")
        reason = "stop"
        if limit is not None and 0 <= limit < len(tokens):
            tokens, reason = tokens[:limit], "length"
        prompt = sum(4 + len(_tokens(m.get("content") or "")) for m in body.get("messages") or [])
        head = {"model": body["model"], "created_at": _now()}
        chunks = [
            {**head, "message": {"role": "assistant", "content": token}, "done": False}
            for token in tokens
        ]
        chunks.append(
            {
                **head,
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": reason,
                "total_duration": 1_000_000,
                "load_duration": 100_000,
                "prompt_eval_count": prompt,
                "prompt_eval_duration": 200_000,
                "eval_count": len(tokens),
                "eval_duration": 700_000,
            }
        )
        return chunks


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOllama
    protocol_version = "HTTP/1.1"  # chunked streaming, as Ollama answers

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body: Any) -> None:
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        with self.owner._lock:
            self.owner.requests.append(RecordedRequest(self.command, self.path, headers, body))

    def do_GET(self) -> None:
        self._record(None)
        if self.path == "/api/version":
            self._json(200, {"version": "0.12.6"})
        elif self.path == "/api/tags":
            models = [{"name": f"{m}:latest", "model": f"{m}:latest"} for m in self.owner.models]
            self._json(200, {"models": models})
        else:
            self._json(404, {"error": "404 page not found"})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._record(None)
            self._json(400, {"error": "invalid JSON"})
            return
        self._record(body)
        if self.path != "/api/chat":
            self._json(404, {"error": "404 page not found"})
            return
        if not isinstance(body, dict) or not body.get("model"):
            self._json(400, {"error": "model is required"})
            return
        if not self.owner._known(body["model"]):
            message = f'model "{body["model"]}" not found, try pulling it first'
            self._json(404, {"error": message})
            return
        chunks = self.owner.chat_chunks(body)
        if body.get("stream", True) is False:
            final = dict(chunks[-1])
            final["message"] = {
                "role": "assistant",
                "content": "".join(c["message"]["content"] for c in chunks),
            }
            self._json(200, final)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            line = json.dumps(chunk).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
