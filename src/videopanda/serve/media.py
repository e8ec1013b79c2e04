"""A media URL of a request -> a local file to decode, within the server's limits.

- a path or ``file://`` URL: only a file under ``MediaPolicy.root`` (symlinks
  resolved first); without a root every local path is refused. Missing,
  outside the root, unreadable or undecodable all give one message, so a reply
  never tells whether a path exists;
- ``data:<mime>;base64,...``: decoded, at most ``max_bytes``;
- ``http(s)://``: downloaded with a timeout and a size limit (``allow_http``);
  a host that resolves to a loopback, private, link-local or otherwise
  non-public address is refused, redirects included, unless
  ``allow_private_hosts`` (so a request cannot make the server fetch from
  its own network). Each hop's host is resolved once and the connection goes
  to the address that was checked (the Host header, TLS SNI and certificate
  still name the host), so a DNS answer that changes in between (rebinding)
  cannot redirect it.

Messages name the request's part, never echo its payload.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import mimetypes
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import httpx

from videopanda.serve.protocol import APIError

DOWNLOAD_CHUNK_BYTES = 1 << 16
MAX_REDIRECTS = 3


@dataclass(frozen=True)
class MediaPolicy:
    root: Path | None = None  # local files only under here; None: no local files
    max_bytes: int = 200 * 1024 * 1024  # a data: URL or a download
    download_timeout_s: float = 30.0
    allow_http: bool = True
    allow_private_hosts: bool = False  # True: also download from loopback/private addresses


def unreadable_local(param: str) -> APIError:
    """The one reply for a local path that is missing, outside the root, unreadable or undecodable."""
    return APIError(400, f"{param}: not a readable media file under the server's media root", param,
                    "invalid_media")


@contextmanager
def media_file(url: str, param: str, policy: MediaPolicy) -> Iterator[Path]:
    """A readable local file holding the media ``url`` points to (temporary for data: URLs and downloads)."""
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        with _temporary(_download(url, param, policy), _suffix_of(urlparse(url).path)) as path:
            yield path
    elif scheme == "data":
        data, mime = _data_url(url, param, policy)
        with _temporary(data, mimetypes.guess_extension(mime) or "") as path:
            yield path
    elif scheme in ("", "file"):
        yield local_file(url, param, policy)
    else:
        raise APIError(400, f"{param}: URL scheme {scheme!r} is not supported (file, http(s), data or a path)", param)


def local_file(url: str, param: str, policy: MediaPolicy) -> Path:
    """The file a path or ``file://`` URL names, if it lies under the media root."""
    if policy.root is None:
        raise APIError(400, f"{param}: local paths are refused: the server was started without --media-root",
                       param, "local_media_disabled")
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
        raise unreadable_local(param)
    raw = unquote(parsed.path) if parsed.scheme == "file" else url
    root = policy.root.resolve()
    try:
        path = (root / raw).resolve()  # an absolute ``raw`` replaces the root
        readable = path.is_relative_to(root) and path.is_file()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
        readable = False
    if not readable:
        raise unreadable_local(param)
    return path


def describe(url: str) -> str:
    """A short, payload-free name for ``url`` in logs and messages."""
    if url.startswith("data:"):
        return f"{url.split(',', 1)[0][:60]},... ({len(url)} characters)"
    return url if len(url) <= 120 else f"{url[:117]}..."


def _data_url(url: str, param: str, policy: MediaPolicy) -> tuple[bytes, str]:
    header, sep, payload = url[len("data:"):].partition(",")
    mime, _, encoding = header.partition(";")
    if not sep or encoding.lower() != "base64":
        raise APIError(400, f"{param}: a data URL must be data:<type>;base64,<data>", param)
    if len(payload) * 3 // 4 > policy.max_bytes:
        raise APIError(413, f"{param}: the data URL exceeds this server's limit of {policy.max_bytes} bytes",
                       param, "media_too_large")
    try:
        return base64.b64decode(payload, validate=True), mime
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: the data URL is not valid base64", param) from None


def _download(url: str, param: str, policy: MediaPolicy) -> bytes:
    if not policy.allow_http:
        raise APIError(400, f"{param}: http(s) media is turned off on this server (--no-http-media)", param)
    name = describe(url)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            target = httpx.URL(url)
            address = _resolve_checked(target.host, param, name, policy)
            # A client per hop: a connection is never reused for another host (its TLS was checked for one name).
            with httpx.Client(timeout=policy.download_timeout_s, follow_redirects=False) as client, client.stream(
                "GET", target.copy_with(host=address), headers={"Host": target.netloc.decode("ascii")},
                extensions={"sni_hostname": target.host},
            ) as response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])  # resolved and checked again before it is fetched
                    continue
                return _body(response, param, name, policy)
        raise APIError(400, f"{param}: downloading {name} failed (more than {MAX_REDIRECTS} redirects)", param)
    except httpx.TimeoutException:
        raise APIError(400, f"{param}: downloading {name} timed out after {policy.download_timeout_s:g} s",
                       param) from None
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        raise APIError(400, f"{param}: downloading {name} failed ({type(err).__name__})", param) from None


def _body(response: httpx.Response, param: str, name: str, policy: MediaPolicy) -> bytes:
    if response.status_code != 200:
        raise APIError(400, f"{param}: downloading {name} failed (HTTP {response.status_code})", param)
    if int(response.headers.get("content-length") or 0) > policy.max_bytes:
        raise _too_large(param, name, policy)
    data = bytearray()
    for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
        data += chunk
        if len(data) > policy.max_bytes:
            raise _too_large(param, name, policy)
    return bytes(data)


def _resolve_checked(host: str, param: str, name: str, policy: MediaPolicy) -> str:
    """The address to connect to for ``host``: resolved once, every address it has checked to be public
    (unless private ones are allowed); the download connects to this address and no other."""
    try:
        addresses = [str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]
    except (socket.gaierror, UnicodeError):
        raise APIError(400, f"{param}: downloading {name} failed (unknown host)", param) from None
    if not addresses:
        raise APIError(400, f"{param}: downloading {name} failed (unknown host)", param)
    if not policy.allow_private_hosts and not all(ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses):
        raise APIError(400, f"{param}: {name}: downloads from loopback, private or link-local addresses are "
                       "refused on this server (--allow-private-urls)", param, "private_url_refused")
    return addresses[0]


def _too_large(param: str, name: str, policy: MediaPolicy) -> APIError:
    return APIError(413, f"{param}: {name} exceeds this server's download limit of {policy.max_bytes} bytes",
                    param, "media_too_large")


@contextmanager
def _temporary(data: bytes, suffix: str) -> Iterator[Path]:
    with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
        handle.write(data)
        handle.flush()
        yield Path(handle.name)


def _suffix_of(path: str) -> str:
    return Path(unquote(path)).suffix[:8]
