"""A loopback fake of the OpenAI REST API (files, fine-tuning jobs, chat completions) for tests.

It answers with the response shapes of the `openai` package's types (`FileObject`,
`FineTuningJob`, `FineTuningJobEvent`, `ChatCompletion`, the `{"error": {...}}` envelope),
simulates a job's status progression, records every request, and can be scripted per route:

    fake = FakeOpenAI(statuses=("validating_files", "running", "succeeded"))
    fake.script("GET /fine_tuning/jobs/{id}", Reply.normal(), Reply.disconnect())
    with fake as base_url:           # "http://127.0.0.1:PORT/v1"
        ...
    fake.requests_to("POST /files")[0].form["purpose"] == "fine-tune"
"""

import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROUTES = {
    "POST /files": re.compile(r"/files"),
    "GET /files/{id}": re.compile(r"/files/(?P<id>[^/]+)"),
    "GET /files/{id}/content": re.compile(r"/files/(?P<id>[^/]+)/content"),
    "POST /fine_tuning/jobs": re.compile(r"/fine_tuning/jobs"),
    "GET /fine_tuning/jobs": re.compile(r"/fine_tuning/jobs"),
    "GET /fine_tuning/jobs/{id}": re.compile(r"/fine_tuning/jobs/(?P<id>[^/]+)"),
    "GET /fine_tuning/jobs/{id}/events": re.compile(r"/fine_tuning/jobs/(?P<id>[^/]+)/events"),
    "POST /fine_tuning/jobs/{id}/cancel": re.compile(r"/fine_tuning/jobs/(?P<id>[^/]+)/cancel"),
    "POST /chat/completions": re.compile(r"/chat/completions"),
}
TERMINAL = {"succeeded", "failed", "cancelled"}
DEFAULT_JOB_ERROR = {
    "code": "invalid_training_file",
    "message": "The job failed due to an invalid training file. Expected file to have JSONL format.",
    "param": "training_file",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
}


def error_body(message: str, status: int, code: str | None = None, param: str | None = None):
    """OpenAI's error envelope."""
    kind = ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class Reply:
    """One scripted answer for a route: status/body/headers, `disconnect()`, or `normal()`."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay_s: float = 0.0
    passthrough: bool = False
    chat_content: str | None = None

    @classmethod
    def normal(cls, delay_s: float = 0.0) -> "Reply":
        """Answer as the simulation would (use it to let some requests through in a script)."""
        return cls(passthrough=True, delay_s=delay_s)

    @classmethod
    def disconnect(cls) -> "Reply":
        """Read the request, then close the connection without answering (a network error)."""
        return cls(drop=True)

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "The server had an error while processing your request. Sorry about that!",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> "Reply":
        return cls(status=status, body=error_body(message, status, code), headers=headers or {})

    @classmethod
    def rate_limited(cls, retry_after_s: float = 0.01) -> "Reply":
        """A 429 with OpenAI's rate-limit body and a `retry-after` header (seconds)."""
        return cls.error(
            429,
            "Rate limit reached for requests. Please try again shortly.",
            code="rate_limit_exceeded",
            headers={"retry-after": str(retry_after_s)},
        )

    @classmethod
    def chat(cls, content: str) -> "Reply":
        """A normal chat completion whose assistant message is `content`."""
        return cls(passthrough=True, chat_content=content)


@dataclass
class UploadedFile:
    filename: str | None
    content_type: str | None
    content: bytes


@dataclass
class RecordedRequest:
    """One request as the server saw it (the Authorization value is never kept)."""

    method: str
    path: str
    route: str | None
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)
    raw: bytes = b""


@dataclass
class Job:
    body: dict[str, Any]
    statuses: tuple[str, ...]
    error: dict[str, Any] | None
    fine_tuned_model: str
    polls: int = 0


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+|\s+", text)


class FakeOpenAI:
    """A threaded OpenAI API fake on 127.0.0.1; use as `with FakeOpenAI() as base_url:`.

    Args:
        statuses: the status sequence of every new job: creation answers the first, each
            `GET /fine_tuning/jobs/{id}` the next one, the last one repeats.
        job_error: the `error` object of a job that reaches `failed`.
        fine_tuned_model: the model id of a succeeded job; by default
            `ft:{model}:org:{suffix}:abc123` (so `ft:gpt-3.5-turbo-0125:org::abc123`).
        chat_content: the assistant answer of chat completions (a string or a function of
            the request body).
        token_logprob: the log-probability of every token when logprobs are asked for.
        api_key: when given, any other bearer token gets a 401.
        port: the loopback port to listen on (default: any free one); a test that first saw
            this address refuse connections can bring the server up there.
    """

    def __init__(
        self,
        *,
        statuses: Sequence[str] = ("validating_files", "running", "succeeded"),
        job_error: dict[str, Any] | None = None,
        fine_tuned_model: str | None = None,
        chat_content: str | Callable[[dict[str, Any]], str] = "[]",
        token_logprob: float = -0.1,
        api_key: str | None = None,
        port: int = 0,
    ) -> None:
        self.statuses = tuple(statuses)
        self.port = port
        self.job_error = job_error
        self.fine_tuned_model = fine_tuned_model
        self.chat_content = chat_content
        self.token_logprob = token_logprob
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.file_contents: dict[str, bytes] = {}
        self.jobs: dict[str, Job] = {}
        self._scripts: dict[str, deque[Reply]] = {route: deque() for route in ROUTES}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting and inspection -------------------------------------------------------

    def script(self, route: str, *replies: Reply) -> None:
        """Queue replies for a route such as "GET /fine_tuning/jobs/{id}" (used in order)."""
        route = route.replace(" /v1/", " /")
        if route not in self._scripts:
            raise ValueError(f"unknown route {route!r}; known: {', '.join(ROUTES)}")
        with self._lock:
            self._scripts[route].extend(replies)

    def requests_to(self, route: str) -> list[RecordedRequest]:
        route = route.replace(" /v1/", " /")
        with self._lock:
            return [r for r in self.requests if r.route == route]

    def add_job(
        self,
        model: str = "gpt-3.5-turbo-0125",
        training_file: str = "file-existing",
        statuses: Sequence[str] | None = None,
        suffix: str | None = None,
    ) -> str:
        """Create a job server-side (as if made by an earlier process); returns its id."""
        with self._lock:
            return self._create_job(
                {"model": model, "training_file": training_file, "suffix": suffix}, statuses
            )["id"]

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake server is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> str:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.base_url

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- the simulated API ----------------------------------------------------------------

    def _next_reply(self, route: str) -> Reply:
        with self._lock:
            queue = self._scripts[route]
            return queue.popleft() if queue else Reply.normal()

    def _create_job(self, body: dict[str, Any], statuses: Sequence[str] | None = None) -> dict:
        model = body["model"]
        statuses = tuple(statuses or self.statuses)
        suffix = body.get("suffix") or ""
        job_id = _new_id("ftjob")
        method = body.get("method") or {"type": "supervised"}
        hyper = body.get("hyperparameters") or method.get(method["type"], {}).get(
            "hyperparameters", {}
        )
        hyperparameters = {
            "batch_size": hyper.get("batch_size", "auto"),
            "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto"),
            "n_epochs": hyper.get("n_epochs", "auto"),
        }
        job = {
            "object": "fine_tuning.job",
            "id": job_id,
            "model": model,
            "created_at": int(time.time()),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": "org-fake",
            "result_files": [],
            "status": statuses[0],
            "validation_file": body.get("validation_file"),
            "training_file": body["training_file"],
            "hyperparameters": hyperparameters,
            "method": {
                "type": method["type"],
                method["type"]: {"hyperparameters": hyperparameters},
            },
            "trained_tokens": None,
            "error": None,
            "seed": body.get("seed", 42),
            "estimated_finish": None,
            "integrations": [],
            "metadata": body.get("metadata"),
            "user_provided_suffix": body.get("suffix"),
        }
        ft_model = self.fine_tuned_model or f"ft:{model}:org:{suffix}:abc123"
        self.jobs[job_id] = Job(job, statuses, self.job_error, ft_model)
        return job

    def _poll_job(self, job: Job) -> dict[str, Any]:
        job.polls += 1
        status = job.statuses[min(job.polls - 1, len(job.statuses) - 1)]
        self._set_status(job, status)
        return job.body

    def _set_status(self, job: Job, status: str) -> None:
        body = job.body
        body["status"] = status
        if status in TERMINAL and body["finished_at"] is None:
            body["finished_at"] = int(time.time())
        if status == "succeeded":
            body["fine_tuned_model"] = job.fine_tuned_model
            body["trained_tokens"] = 12345
            body["result_files"] = [_new_id("file")]
        if status == "failed":
            body["error"] = job.error or DEFAULT_JOB_ERROR

    def _events(self, job: Job, limit: int) -> dict[str, Any]:
        seen = job.statuses[: max(job.polls, 1)]
        messages = {
            "validating_files": f"Validating training file: {job.body['training_file']}",
            "queued": "Fine-tuning job queued",
            "running": "Fine-tuning job started",
            "succeeded": "The job has successfully completed",
            "failed": f"Fine-tuning job failed: {(job.error or DEFAULT_JOB_ERROR)['message']}",
            "cancelled": "Fine-tuning job cancelled",
        }
        events = [
            {
                "object": "fine_tuning.job.event",
                "id": f"ftevent-{i:024d}",
                "created_at": job.body["created_at"] + i,
                "level": "error" if status == "failed" else "info",
                "message": messages.get(status, status),
                "data": {},
                "type": "message",
            }
            for i, status in enumerate(dict.fromkeys(seen))
        ]
        events.reverse()  # newest first, as the API lists them
        return {"object": "list", "data": events[:limit], "has_more": len(events) > limit}

    def _chat(self, body: dict[str, Any], content: str | None) -> dict[str, Any]:
        if content is None:
            content = self.chat_content(body) if callable(self.chat_content) else self.chat_content
        tokens = _tokens(content)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if limit is not None and len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
            content = "".join(tokens)
        logprobs = None
        if body.get("logprobs"):
            top = int(body.get("top_logprobs") or 0)
            logprobs = {
                "content": [
                    {
                        "token": token,
                        "logprob": self.token_logprob,
                        "bytes": list(token.encode()),
                        "top_logprobs": [
                            {
                                "token": token,
                                "logprob": self.token_logprob,
                                "bytes": list(token.encode()),
                            }
                        ][:top],
                    }
                    for token in tokens
                ],
                "refusal": None,
            }
        prompt_tokens = sum(
            4 + len(_tokens(m["content"]))
            for m in body.get("messages", [])
            if isinstance(m.get("content"), str)
        )
        choices = [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": logprobs,
                "finish_reason": finish,
            }
            for i in range(int(body.get("n") or 1))
        ]
        completion_tokens = len(tokens) * len(choices)
        return {
            "id": _new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _answer(self, route: str, params: dict[str, str], req: RecordedRequest, reply: Reply):
        """The simulated (status, body) of a request."""
        if route == "POST /files":
            upload = req.files.get("file")
            if upload is None or req.form.get("purpose") is None:
                return 400, error_body("'file' and 'purpose' are required", 400)
            file_id = _new_id("file")
            obj = {
                "object": "file",
                "id": file_id,
                "purpose": req.form["purpose"],
                "filename": upload.filename or "upload",
                "bytes": len(upload.content),
                "created_at": int(time.time()),
                "expires_at": None,
                "status": "processed",
                "status_details": None,
            }
            self.files[file_id] = obj
            self.file_contents[file_id] = upload.content
            return 200, obj
        if route in ("GET /files/{id}", "GET /files/{id}/content"):
            if params["id"] not in self.files:
                return 404, error_body(f"No such File object: {params['id']}", 404, param="id")
            if route.endswith("content"):
                return 200, self.file_contents[params["id"]]
            return 200, self.files[params["id"]]
        if route == "POST /fine_tuning/jobs":
            body = req.json if isinstance(req.json, dict) else {}
            for key in ("model", "training_file"):
                if not body.get(key):
                    return 400, error_body(f"Missing required parameter: '{key}'.", 400, param=key)
            if body["training_file"] not in self.files:
                message = f"invalid training_file: {body['training_file']}"
                return 400, error_body(message, 400, param="training_file")
            return 200, self._create_job(body)
        if route == "GET /fine_tuning/jobs":
            data = [job.body for job in reversed(self.jobs.values())]
            return 200, {"object": "list", "data": data, "has_more": False}
        if route.startswith(("GET /fine_tuning/jobs/{id}", "POST /fine_tuning/jobs/{id}")):
            job = self.jobs.get(params["id"])
            if job is None:
                message = f"Could not find fine tune: {params['id']}"
                return 404, error_body(message, 404, code="fine_tune_not_found", param="id")
            if route.endswith("/events"):
                return 200, self._events(job, int(req.query.get("limit", ["20"])[0]))
            if route.endswith("/cancel"):
                self._set_status(job, "cancelled")
                job.statuses = ("cancelled",)
                return 200, job.body
            return 200, self._poll_job(job)
        if route == "POST /chat/completions":
            body = req.json if isinstance(req.json, dict) else {}
            if not body.get("model") or not body.get("messages"):
                return 400, error_body("'model' and 'messages' are required", 400)
            return 200, self._chat(body, reply.chat_content)
        raise AssertionError(route)


def _parse_multipart(content_type: str, raw: bytes) -> tuple[dict[str, str], dict]:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    form: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is None:
            form[name] = payload.decode()
        else:
            files[name] = UploadedFile(filename, part.get_content_type(), payload)
    return form, files


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _handle(self) -> None:
        owner = self.owner
        url = urlsplit(self.path)
        raw = self._read_body()
        path = url.path.removeprefix("/v1")
        route, params = None, {}
        for name, pattern in ROUTES.items():
            match = pattern.fullmatch(path)
            if match and name.split(" ")[0] == self.command:
                route, params = name, match.groupdict()
                break
        headers = {k.lower(): v for k, v in self.headers.items()}
        if "authorization" in headers:
            headers["authorization"] = "<redacted>"
        req = RecordedRequest(self.command, url.path, route, parse_qs(url.query), headers, raw=raw)
        content_type = self.headers.get("content-type", "")
        if content_type.startswith("application/json") and raw:
            req.json = json.loads(raw)
        elif content_type.startswith("multipart/form-data"):
            req.form, req.files = _parse_multipart(content_type, raw)
        with owner._lock:
            owner.requests.append(req)

        if not self._authorized():
            message = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
            self._send(401, error_body(message, 401, code="invalid_api_key"))
            return
        if route is None:
            message = f"Invalid URL ({self.command} {url.path})"
            self._send(404, error_body(message, 404))
            return
        reply = owner._next_reply(route)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.passthrough:
            with owner._lock:
                status, body = owner._answer(route, params, req, reply)
        else:
            status, body = reply.status, reply.body
        if isinstance(body, dict) and route == "POST /chat/completions" and req.json:
            if req.json.get("stream"):
                self._stream_chat(body, req.json, reply.headers)
                return
        self._send(status, body, reply.headers)

    def _authorized(self) -> bool:
        header = self.headers.get("authorization", "")
        if header.startswith("Basic ") and self.owner.api_key is None:
            return True  # user:password in the base URL (a server behind a proxy's basic auth)
        token = header.removeprefix("Bearer ").strip()
        if not header.startswith("Bearer ") or not token:
            return False
        return self.owner.api_key is None or token == self.owner.api_key

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        if isinstance(body, bytes):
            data, content_type = body, "application/octet-stream"
        else:
            data, content_type = json.dumps(body).encode(), "application/json"
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", f"req_{secrets.token_hex(8)}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream_chat(self, body: dict, request: dict, headers: dict[str, str]) -> None:
        """Server-sent `chat.completion.chunk` events, one per token, then `[DONE]`."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.close_connection = True
        base = {k: body[k] for k in ("id", "created", "model", "system_fingerprint")}
        base["object"] = "chat.completion.chunk"
        choice = body["choices"][0]
        pieces = _tokens(choice["message"]["content"] or "")
        logprobs = (choice["logprobs"] or {}).get("content") or [None] * len(pieces)
        deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
        for i, delta in enumerate(deltas):
            token_logprobs = [logprobs[i - 1]] if i and logprobs[i - 1] else None
            chunk_choice = {
                "index": 0,
                "delta": delta,
                "logprobs": {"content": token_logprobs, "refusal": None}
                if token_logprobs
                else None,
                "finish_reason": None,
            }
            self._event({**base, "choices": [chunk_choice]})
        last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]}
        self._event({**base, "choices": [last]})
        if (request.get("stream_options") or {}).get("include_usage"):
            self._event({**base, "choices": [], "usage": body["usage"]})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, payload: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
