"""`data fetch carb` downloads at a pinned commit and verifies sha256 (tested on loopback, not GitHub)."""

import functools
import http.server
import shutil
import threading

import pytest

from triplesmith.data.fetch import CARB_FILES, fetch_carb
from triplesmith.errors import DatasetError


@pytest.fixture()
def carb_mirror(tmp_path, carb_dir):
    """A loopback HTTP server laid out like CaRB's data/ folder."""
    root = tmp_path / "mirror"
    for remote, (local, _) in CARB_FILES.items():
        (root / remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(carb_dir / local, root / remote)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_writes_verified_files_in_the_prepare_layout(tmp_path, carb_mirror):
    _, url = carb_mirror
    files = fetch_carb(tmp_path / "carb", base_url=url)
    assert len(files) == 4
    assert (tmp_path / "carb" / "gold" / "test.tsv").is_file()
    assert (tmp_path / "carb" / "sentences" / "dev.txt").is_file()


def test_fetch_refuses_a_file_whose_hash_does_not_match(tmp_path, carb_mirror):
    root, url = carb_mirror
    with (root / "gold" / "test.tsv").open("a") as handle:
        handle.write("tampered\trow\tx\ty\n")
    with pytest.raises(DatasetError, match="does not match the pinned"):
        fetch_carb(tmp_path / "carb", base_url=url)
    assert not (tmp_path / "carb" / "gold" / "test.tsv").exists()


def test_fetch_names_the_url_when_the_server_fails(tmp_path):
    with pytest.raises(DatasetError, match="cannot download http://127.0.0.1:9/"):
        fetch_carb(tmp_path / "carb", base_url="http://127.0.0.1:9", timeout=2)
