"""`langgraph dev` serves the graph offline: a real server in a subprocess, called with langgraph_sdk."""

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which(
        "langgraph"
    )
    if exe is None:
        pytest.fail("langgraph CLI not installed: pip install 'langgraph-cli[inmem]'")
    port = _free_port()
    log = (tmp_path_factory.mktemp("langgraph") / "server.log").open("w")
    env = {**os.environ, "LANGSMITH_TRACING": "false", "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
    env.pop("LANGSMITH_API_KEY", None)
    proc = subprocess.Popen(
        [exe, "dev", "--no-browser", "--port", str(port), "--host", "127.0.0.1", "--no-reload"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"langgraph dev exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail(f"langgraph dev did not answer /ok: {Path(log.name).read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_served_graph_extracts_with_the_embedded_model_and_survives_bad_input(server: str) -> None:
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    spec = "few-shot:smollm2+max_new_tokens=40"
    config = {"configurable": {"chain": spec, "max_repairs": 0}}

    state = client.runs.wait(
        None, "extractor", input={"sentence": "Barack Obama was born in Hawaii."}, config=config
    )
    result = state["results"][spec]
    assert result["triples"] and result["raw"]
    assert isinstance(result["tags"], list) and result["model"] == "smollm2"

    bad = client.runs.wait(
        None, "extractor", input={"sentence": "   "}, config=config, raise_error=False
    )
    assert "empty or whitespace" in str(bad)

    again = client.runs.wait(
        None, "extractor", input={"sentence": "Paris is the capital of France."}, config=config
    )
    assert again["results"][spec]["raw"]


def test_the_server_names_bad_configuration_and_keeps_requests_inside_its_roots(
    server: str,
) -> None:
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    sentence = {"sentence": "Paris is the capital of France."}
    cases = [
        ({"chain": "hf:smollm2+adapter=/etc"}, "outside the folders this server may read"),
        ({"chain": "few-shot:smollm2", "chian": "x"}, "unknown run configuration key"),
        (
            {"chain": "few-shot:smollm2", "max_repairs": 50},
            "max_repairs: Input should be less than or equal to 5",
        ),
        ({"chain": "few-shot:smollm2+k=-1"}, "k must be an integer >= 0"),
    ]
    for configurable, words in cases:
        reply = client.runs.wait(
            None, "extractor", input=sentence, config={"configurable": configurable},
            raise_error=False,
        )  # fmt: skip
        assert words in str(reply), reply
        assert "internal error" not in str(reply).lower()
