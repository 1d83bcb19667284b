"""A loopback fake of the LangSmith REST API for tests: the routes `langsmith.Client` calls to
push a dataset and run an experiment, answered in the API's response shapes, every request
recorded.

    with FakeLangSmith() as api_url:       # "http://127.0.0.1:PORT"
        os.environ["LANGSMITH_ENDPOINT"] = api_url
        ...
    fake.requests_to("POST /sessions")[0].json["reference_dataset_id"]

Routes: `GET /info`; `GET|POST /datasets`, `GET /datasets/{id}`, `GET /datasets/{id}/version`,
`GET /datasets/{id}/versions`, `PUT /datasets/{id}/tags`; `POST|PATCH /examples/bulk`,
`GET|DELETE /examples`; `GET|POST /sessions`, `GET|PATCH /sessions/{id}`; `POST /runs/multipart`,
`POST /runs/batch`, `POST /runs`, `PATCH /runs/{id}`; `POST /feedback`. Anything else is a 404
(recorded, so a test can see it).

Datasets are versioned as LangSmith does it: every change to a dataset's examples (create,
update, delete) makes a version named by its timestamp (`as_of`); a tag names one version, and
`GET /examples?as_of=` reads a version by tag or timestamp (`latest` is the newest).
"""

import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TENANT_ID = "00000000-0000-4000-8000-00000000beef"
INFO = {
    "version": "0.10.120",
    "license_expiration_time": None,
    "batch_ingest_config": {
        "use_multipart_endpoint": True,
        "scale_up_qsize_trigger": 1000,
        "scale_up_nthreads_limit": 16,
        "scale_down_nempty_trigger": 4,
        "size_limit": 100,
        "size_limit_bytes": 20971520,
    },
    "instance_flags": {
        "dataset_examples_multipart_enabled": False,
        "examples_multipart_enabled": False,
        "zstd_compression_enabled": False,
    },
}
ROUTES = {
    "GET /info": re.compile(r"/info"),
    "GET /datasets": re.compile(r"/datasets"),
    "POST /datasets": re.compile(r"/datasets"),
    "GET /datasets/{id}": re.compile(r"/datasets/(?P<id>[0-9a-f-]{36})"),
    "GET /datasets/{id}/version": re.compile(r"/datasets/(?P<id>[0-9a-f-]{36})/version"),
    "GET /datasets/{id}/versions": re.compile(r"/datasets/(?P<id>[0-9a-f-]{36})/versions"),
    "PUT /datasets/{id}/tags": re.compile(r"/datasets/(?P<id>[0-9a-f-]{36})/tags"),
    "POST /examples/bulk": re.compile(r"/examples/bulk"),
    "PATCH /examples/bulk": re.compile(r"/examples/bulk"),
    "GET /examples": re.compile(r"/examples"),
    "DELETE /examples": re.compile(r"/examples"),
    "GET /sessions": re.compile(r"/sessions"),
    "POST /sessions": re.compile(r"/sessions"),
    "GET /sessions/{id}": re.compile(r"/sessions/(?P<id>[0-9a-f-]{36})"),
    "PATCH /sessions/{id}": re.compile(r"/sessions/(?P<id>[0-9a-f-]{36})"),
    "POST /runs/multipart": re.compile(r"/runs/multipart"),
    "POST /runs/batch": re.compile(r"/runs/batch"),
    "POST /runs": re.compile(r"/runs"),
    "PATCH /runs/{id}": re.compile(r"/runs/(?P<id>[0-9a-f-]{36})"),
    "POST /feedback": re.compile(r"/feedback"),
}


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class RecordedRequest:
    """One request as the server saw it. `parts` holds a multipart body's parts by name
    (`post.<run id>`, `post.<run id>.outputs`, ...), each decoded from JSON."""

    method: str
    path: str
    route: str | None
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes = b""
    json: Any = None
    parts: dict[str, Any] = field(default_factory=dict)


def _parse_parts(content_type: str, raw: bytes) -> dict[str, Any]:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    parts: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        try:
            parts[name] = json.loads(payload)
        except ValueError:
            parts[name] = payload
    return parts


class FakeLangSmith:
    """A threaded LangSmith API fake on 127.0.0.1 holding datasets, examples, experiments
    (sessions), runs and feedback in memory. `feedback` collects both routes the SDK uses:
    `POST /feedback` and the `feedback.<id>` parts of `POST /runs/multipart`."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.datasets: dict[str, dict[str, Any]] = {}
        self.examples: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.feedback: list[dict[str, Any]] = []
        # Per dataset: its versions, oldest first ({"as_of", "examples": {id: example}}), and
        # its tags (tag -> as_of).
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self._clock = datetime.now(UTC)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def requests_to(self, route: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.route == route]

    @property
    def api_url(self) -> str:
        assert self._server is not None, "start the fake first: with FakeLangSmith() as url"
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> str:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.api_url

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def version_examples(self, dataset_id: str, as_of: str = "latest") -> list[dict[str, Any]]:
        """The examples of one version of a dataset (by tag or timestamp)."""
        version = self._version(dataset_id, as_of)
        return list(version["examples"].values()) if version else []

    # -- versions -----------------------------------------------------------------------------

    def _tick(self) -> str:
        """A timestamp later than every earlier one (each change is its own version)."""
        self._clock = max(datetime.now(UTC), self._clock + timedelta(microseconds=1))
        return self._clock.isoformat()

    def _new_version(self, dataset_id: str) -> None:
        as_of = self._tick()
        current = {k: v for k, v in self.examples.items() if v["dataset_id"] == dataset_id}
        self.versions.setdefault(dataset_id, []).append(
            {"as_of": as_of, "examples": copy.deepcopy(current)}
        )
        self.datasets[dataset_id].update(modified_at=as_of, example_count=len(current))

    def _version(self, dataset_id: str, as_of: str) -> dict[str, Any] | None:
        versions = self.versions.get(dataset_id, [])
        if as_of == "latest":
            return versions[-1] if versions else None
        tagged = self.tags.get(dataset_id, {}).get(as_of)
        try:
            moment = datetime.fromisoformat(tagged or as_of)
        except ValueError:
            return None
        older = [v for v in versions if datetime.fromisoformat(v["as_of"]) <= moment]
        return older[-1] if older else None

    def _version_body(self, dataset_id: str, version: dict[str, Any]) -> dict[str, Any]:
        tags = [t for t, at in self.tags.get(dataset_id, {}).items() if at == version["as_of"]]
        return {"as_of": version["as_of"], "tags": tags}

    # -- the API ------------------------------------------------------------------------------

    def answer(self, route: str, ids: dict[str, str], req: RecordedRequest) -> tuple[int, Any]:
        query = {k: v[-1] for k, v in req.query.items()}
        body = req.json
        if route == "GET /info":
            return 200, INFO
        if route == "GET /datasets":
            found = [d for d in self.datasets.values() if d["name"] == query.get("name", d["name"])]
            return 200, found[: int(query.get("limit", 100))]
        if route == "POST /datasets":
            if any(d["name"] == body["name"] for d in self.datasets.values()):
                return 409, {"detail": f"Dataset {body['name']} already exists"}
            dataset = {
                "id": str(uuid.uuid4()),
                "name": body["name"],
                "description": body.get("description"),
                "data_type": body.get("data_type", "kv"),
                "created_at": _now(),
                "modified_at": _now(),
                "example_count": 0,
                "session_count": 0,
                "tenant_id": TENANT_ID,
                "metadata": (body.get("extra") or {}).get("metadata"),
            }
            self.datasets[dataset["id"]] = dataset
            return 200, dataset
        if route == "GET /datasets/{id}":
            dataset = self.datasets.get(ids["id"])
            return (200, dataset) if dataset else (404, {"detail": "Dataset not found"})
        if route in ("GET /datasets/{id}/version", "GET /datasets/{id}/versions"):
            if ids["id"] not in self.datasets:
                return 404, {"detail": "Dataset not found"}
            if route.endswith("versions"):
                found = reversed(self.versions.get(ids["id"], []))
                return 200, [self._version_body(ids["id"], v) for v in found]
            wanted = query.get("tag") or query.get("as_of") or "latest"
            version = self._version(ids["id"], wanted)
            if version is None:
                return 404, {"detail": f"Dataset version {wanted} not found"}
            return 200, self._version_body(ids["id"], version)
        if route == "PUT /datasets/{id}/tags":
            moment = datetime.fromisoformat(body["as_of"])
            versions = self.versions.get(ids["id"], [])
            if not any(datetime.fromisoformat(v["as_of"]) == moment for v in versions):
                return 404, {"detail": f"No version of dataset {ids['id']} at {body['as_of']}"}
            exact = next(v for v in versions if datetime.fromisoformat(v["as_of"]) == moment)
            self.tags.setdefault(ids["id"], {})[body["tag"]] = exact["as_of"]
            return 200, self._version_body(ids["id"], exact)
        if route == "POST /examples/bulk":
            created, touched = [], set()
            for item in body:
                if item["dataset_id"] not in self.datasets:
                    return 404, {"detail": f"Dataset {item['dataset_id']} not found"}
                example = {
                    "id": item.get("id") or str(uuid.uuid4()),
                    "dataset_id": item["dataset_id"],
                    "inputs": item["inputs"],
                    "outputs": item.get("outputs"),
                    "metadata": item.get("metadata"),
                    "created_at": _now(),
                    "modified_at": _now(),
                }
                self.examples[example["id"]] = example
                touched.add(item["dataset_id"])
                created.append(example)
            for dataset_id in touched:
                self._new_version(dataset_id)
            return 200, created
        if route == "PATCH /examples/bulk":
            touched = set()
            for item in body:
                example = self.examples.get(item["id"])
                if example is None:
                    return 404, {"detail": f"Example {item['id']} not found"}
                for part in ("inputs", "outputs", "metadata"):
                    if part in item:
                        example[part] = item[part]
                example["modified_at"] = _now()
                touched.add(example["dataset_id"])
            for dataset_id in touched:
                self._new_version(dataset_id)
            ids_ = [item["id"] for item in body]
            return 200, {"message": f"{len(ids_)} examples updated", "example_ids": ids_}
        if route == "DELETE /examples":
            doomed = req.query.get("example_ids", [])
            touched = {self.examples[i]["dataset_id"] for i in doomed if i in self.examples}
            for example_id in doomed:
                self.examples.pop(example_id, None)
            for dataset_id in touched:
                self._new_version(dataset_id)
            return 200, {"message": f"{len(doomed)} examples deleted"}
        if route == "GET /examples":
            dataset_id = query.get("dataset")
            if "as_of" in query:
                version = self._version(dataset_id, query["as_of"])
                if version is None and self.versions.get(dataset_id):
                    return 404, {"detail": f"Dataset version {query['as_of']} not found"}
                rows = list(version["examples"].values()) if version else []
            else:
                rows = [e for e in self.examples.values() if e["dataset_id"] == dataset_id]
            if splits := req.query.get("splits"):
                rows = [
                    e
                    for e in rows
                    if set((e.get("metadata") or {}).get("dataset_split") or ["base"]) & set(splits)
                ]
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
            return 200, rows[offset : offset + limit]
        if route == "GET /sessions":
            found = [s for s in self.sessions.values() if s["name"] == query.get("name", s["name"])]
            return 200, found[: int(query.get("limit", 100))]
        if route == "POST /sessions":
            if any(s["name"] == body["name"] for s in self.sessions.values()):
                return 409, {"detail": "Session already exists"}
            session = {
                **body,
                "id": body.get("id") or str(uuid.uuid4()),
                "start_time": _now(),
                "tenant_id": TENANT_ID,
            }
            self.sessions[session["id"]] = session
            return 200, session
        if route == "GET /sessions/{id}":
            session = self.sessions.get(ids["id"])
            return (200, session) if session else (404, {"detail": "Session not found"})
        if route == "PATCH /sessions/{id}":
            session = self.sessions.get(ids["id"])
            if session is None:
                return 404, {"detail": "Session not found"}
            session.update({k: v for k, v in body.items() if v is not None})
            return 200, session
        if route == "POST /runs/multipart":
            for name, value in req.parts.items():
                operation, run_id, *rest = name.split(".")
                if operation == "feedback":
                    self.feedback.append(value)
                    continue
                run = self.runs.setdefault(run_id, {"id": run_id})
                if rest:
                    run[rest[0]] = value
                elif isinstance(value, dict):
                    run.update(value)
            return 202, {}
        if route == "POST /runs/batch":
            for run in [*(body.get("post") or []), *(body.get("patch") or [])]:
                self.runs.setdefault(run["id"], {}).update(run)
            return 202, {}
        if route == "POST /runs":
            self.runs[body["id"]] = dict(body)
            return 202, {}
        if route == "PATCH /runs/{id}":
            self.runs.setdefault(ids["id"], {"id": ids["id"]}).update(body)
            return 202, {}
        if route == "POST /feedback":
            self.feedback.append(body)
            return 200, {**body, "id": body.get("id") or str(uuid.uuid4())}
        return 404, {"detail": "Not Found"}


class _Handler(BaseHTTPRequestHandler):
    owner: FakeLangSmith

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
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
        url = urlsplit(self.path)
        raw = self._read_body()
        path = url.path.rstrip("/") or "/"
        route, ids = None, {}
        for name, pattern in ROUTES.items():
            method = name.split(" ", 1)[0]
            match = pattern.fullmatch(path)
            if method == self.command and match:
                route, ids = name, match.groupdict()
                break
        content_type = self.headers.get("content-type", "")
        req = RecordedRequest(
            method=self.command,
            path=path,
            route=route,
            query=parse_qs(url.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            raw=raw,
        )
        if content_type.startswith("multipart/"):
            req.parts = _parse_parts(content_type, raw)
        elif raw:
            try:
                req.json = json.loads(raw)
            except ValueError:
                req.json = None
        owner = self.owner
        with owner._lock:
            owner.requests.append(req)
            status, body = owner.answer(route or "", ids, req)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
