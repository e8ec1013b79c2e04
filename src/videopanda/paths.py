"""Names that come from data (record ids, video names) made into paths that stay inside their directory.

An id is never a path: ``id_file_stem`` turns it into one file name, reversibly.
Plain ids (ASCII letters, digits and ``-_.#+=,@`` and the like, not starting
with a dot) are their own stem, so ``v_1`` is ``v_1.json`` as the release
writes it; any other byte (``/``, ``\\``, NUL, ``%``, ``:``, non-ASCII) becomes
``%XX``, and a leading dot ``%2E``. A stem longer than ``MAX_STEM_BYTES``
(a file name holds at most 255 bytes) keeps a prefix and ends in ``%~`` and
the id's SHA-256: unique, but readable back only from the records that hold
the id (the judge's ``verdicts.jsonl``).

A media name (``video_name`` of a questions file, ``video`` of an annotation)
is a relative path below its directory: ``media_path`` refuses absolute names,
``..`` and NUL. Symbolic links inside the directory are followed as the
directory's owner set them up.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path, PurePosixPath
from urllib.parse import unquote_to_bytes

KEPT_CHARS = frozenset(string.ascii_letters + string.digits + " !#$&'()+,-.;=@[]^_`{}~")
MAX_STEM_BYTES = 200  # leaves room for ".json" and a temporary file's prefix and suffix under the 255-byte limit
HASHED_MARK = "%~"  # never produced by the escaping (every other % is followed by two hex digits)


def id_file_stem(item_id: str) -> str:
    """The file name (without extension) that stands for ``item_id``: no separator, never hidden, <= 200 bytes."""
    if not item_id:
        raise ValueError("an empty id names no file")
    raw = item_id.encode("utf-8", "surrogatepass")
    stem = "".join(chr(b) if chr(b) in KEPT_CHARS else f"%{b:02X}" for b in raw)
    if stem.startswith("."):
        stem = "%2E" + stem[1:]
    if len(stem) > MAX_STEM_BYTES:
        digest = hashlib.sha256(raw).hexdigest()
        stem = stem[: MAX_STEM_BYTES - len(HASHED_MARK) - len(digest)] + HASHED_MARK + digest
    return stem


def id_from_file_stem(stem: str) -> str | None:
    """The id ``id_file_stem`` made ``stem`` from; None for a hashed (over-long) one. A plain name is itself."""
    if HASHED_MARK in stem:
        return None
    try:
        return unquote_to_bytes(stem).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return stem  # not one of ours: a name some other program chose


def media_path(directory: str | Path, name: str) -> Path:
    """``directory / name`` for a relative ``name`` that stays below ``directory``; a ``ValueError`` otherwise."""
    problem = check_media_name(name)
    if problem:
        raise ValueError(f"media name {name!r} {problem}: names are paths relative to {directory}")
    return Path(directory) / name


def check_media_name(name: str) -> str | None:
    """What makes ``name`` leave its directory (or no file at all), or None when it is a relative path below it."""
    if not name:
        return "is empty"
    if "\x00" in name:
        return "holds a NUL character"
    path = PurePosixPath(name)
    if path.is_absolute() or Path(name).is_absolute():
        return "is an absolute path"
    if ".." in path.parts:
        return "climbs out of its directory ('..')"
    return None
