"""The gossip keyring on disk, in Serf's ``-keyring-file`` format: a JSON array of base64 keys,
the primary one first. Key queries (``serf keys``, ``vxnet keys``) change a running node's
keyring; the file carries the change across a restart, so a node that restarts after a rotation
still speaks the cluster's key.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from vxnet.gossip._keyring import format_key, parse_key

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["read_keyring_file", "write_keyring_file"]

MAX_FILE = 64 * 1024  # far above any keyring; a bigger file is not one


def read_keyring_file(path: Path) -> tuple[str, ...]:
    """The keys in the keyring file at ``path``, primary first.

    Raises:
        OSError: The file cannot be read.
        ValueError: It is not a keyring file; the text says why.
    """
    with path.open("rb") as f:
        data = f.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise ValueError(f"{path}: larger than {MAX_FILE} bytes, not a keyring file")
    try:
        keys = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{path}: want a non-empty JSON array of base64 keys")
    for key in keys:
        try:
            parse_key(key)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return tuple(keys)


def write_keyring_file(path: Path, keys: tuple[bytes, ...]) -> None:
    """Replace the keyring file at ``path`` with ``keys`` (primary first): written beside it
    with mode 0600, synced, then renamed over it, so a crash leaves the old file or the new.

    Raises:
        OSError: The file cannot be written.
    """
    text = json.dumps([format_key(k) for k in keys], indent=2) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
