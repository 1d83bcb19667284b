"""Download CaRB's gold and sentences from its public repository at a pinned commit, sha256-verified."""

import hashlib
import os
import tempfile
from pathlib import Path

import httpx
from rich.progress import Progress

from triplesmith.errors import DatasetError

CARB_COMMIT = "024e0e91951eea1e6d7825a13ec303cae909e67b"
CARB_BASE_URL = f"https://raw.githubusercontent.com/dair-iitd/CaRB/{CARB_COMMIT}/data"
# remote path (under data/) -> (local path under --to, sha256 at the pinned commit)
CARB_FILES: dict[str, tuple[str, str]] = {
    "gold/dev.tsv": (
        "gold/dev.tsv",
        "2081484b4fd237728591227becf6357799fd1575366fa1eeb51590822fbce6fc",
    ),
    "gold/test.tsv": (
        "gold/test.tsv",
        "5c74f7c51e147cc462ac7373d5293cb2b9df8455dcebd187fc6db6124bc5d4c2",
    ),
    "dev.txt": (
        "sentences/dev.txt",
        "d748c3363dda9dd77ffdc8711c3f2f6d5aaf24e88ab24a460d080335150d8c8c",
    ),
    "test.txt": (
        "sentences/test.txt",
        "81fbd0dc2c16ba584db035b6fe6de92f6ab14ee99364c58c9b18ee56b0dfcbbe",
    ),
}


def fetch_carb(to: Path, base_url: str = CARB_BASE_URL, timeout: float = 60.0) -> list[Path]:
    """Download CaRB into `to` (gold/ and sentences/, the layout `data prepare` reads).

    Each file is verified against its pinned sha256 before it is moved into place; a file
    already present with the right hash is kept, so an interrupted fetch resumes.
    """
    to = Path(to)
    written = []
    with httpx.Client(timeout=timeout, follow_redirects=True) as client, Progress() as progress:
        task = progress.add_task("fetching CaRB", total=len(CARB_FILES))
        for remote, (local, expected) in CARB_FILES.items():
            target = to / local
            if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
                written.append(target)
                progress.advance(task)
                continue
            url = f"{base_url.rstrip('/')}/{remote}"
            try:
                response = client.get(url)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise DatasetError(
                    f"cannot download {url}: {exc}; check the network, or pass a local CaRB "
                    "checkout to --carb-dir instead"
                ) from None
            digest = hashlib.sha256(response.content).hexdigest()
            if digest != expected:
                raise DatasetError(
                    f"{url}: sha256 {digest} does not match the pinned {expected}; "
                    "the download is corrupt or the source changed, so it was not used"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            with os.fdopen(fd, "wb") as handle:
                handle.write(response.content)
            os.replace(tmp, target)
            written.append(target)
            progress.advance(task)
    return written
