"""Storage through fsspec: the same code writes to a local directory, ``file://`` or ``gs://``.

gcsfs probes a gRPC (hierarchical-namespace) endpoint on every operation unless
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is false, which costs ~60 s per call where that endpoint is not
reachable (the GCS emulator, restricted networks); we default it to false before gcsfs is imported.
Credentials and the endpoint are gcsfs's own: application-default credentials in the cluster,
``STORAGE_EMULATOR_HOST`` + ``FSSPEC_GS_TOKEN=anon`` against the emulator.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the protocol-less path for a URI or local path."""
    return url_to_fs(str(uri))


def join(uri: str, *parts: str) -> str:
    return "/".join([str(uri).rstrip("/"), *[p.strip("/") for p in parts]])


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def is_gcs(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return bool({"gs", "gcs"} & set(protocols))


def move(fs: fsspec.AbstractFileSystem, src: str, dst: str) -> None:
    """Move one object into place: an atomic rename locally, a server-side copy + delete on GCS.

    On GCS the copy is atomic per object. gcsfs's own ``mv`` first tries the newer ``moveTo`` API
    and retries it for ~30 s where it is not available (the emulator answers 501) before falling
    back to copy + delete: we go straight to that.
    """
    if is_gcs(fs):
        fs.copy(src, dst)
        fs.rm(src)
    else:
        fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
        fs.mv(src, dst)


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write to a temporary sibling and rename it into place.

    Readers see either the old object or the new one, never a half-written file (a rename is
    atomic on a local filesystem; on GCS a single-object upload is atomic already).
    """
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if is_gcs(fs):
        fs.pipe_file(path, data)
        return
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
    try:
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def read_json(uri: str) -> Any:
    fs, path = filesystem(uri)
    with fs.open(path, "r") as fh:
        return json.load(fh)


def write_json(uri: str, obj: Any) -> None:
    write_bytes_atomic(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def upload_dir(local_dir: str | Path, uri: str) -> None:
    """Copy a local directory tree to a URI (file by file, each atomically)."""
    local_dir = Path(local_dir)
    for file in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        write_bytes_atomic(join(uri, file.relative_to(local_dir).as_posix()), file.read_bytes())


def download_dir(uri: str, local_dir: str | Path) -> Path:
    """Copy a directory URI to a local directory and return it."""
    fs, path = filesystem(uri)
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    if not fs.isdir(path):
        raise FileNotFoundError(f"{uri} is not a directory")
    for remote in fs.find(path):
        rel = remote[len(path.rstrip("/")) + 1 :]
        target = local_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fs.cat_file(remote))
    return local_dir
