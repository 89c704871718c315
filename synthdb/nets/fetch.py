"""Download a model card's weights into the models directory, checked and atomic.

Many synthdb machines (cluster nodes, this sandbox) have no internet, so the first thing a download does is
a bounded reachability probe: offline, the user learns within seconds which URL failed and how to bring the
file in by hand, instead of waiting on DNS or TCP timeouts. The body streams into a temporary file next to
its destination, hashed on the way, and is renamed into place only when complete and matching the card, so
a models directory never holds a partial or wrong file under a real name.
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPResponse
from pathlib import Path

from synthdb.errors import SynthdbError
from synthdb.files import sha256_hex
from synthdb.nets.cards import ModelCard
from synthdb.progress import progress_bar

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


def fetch_weights(card: ModelCard, dest: str | Path, progress: bool = True, *,
                  connect_timeout: float = CONNECT_TIMEOUT_S) -> Path:
    """``dest`` (where :mod:`synthdb.zoo` keeps the card's file), downloaded from ``card.url`` unless a copy
    with the card's sha256 is there.

    Without a card sha256 an existing file is trusted as is (nothing to compare it with).
    """
    if card.embedded:
        raise SynthdbError(f"{card.name} ships with the installed package {card.package}: "
                           "nothing to download")
    if not card.url:
        raise SynthdbError(f"{card.name} has no download URL: copy {card.file} onto this machine and run "
                           f"`synthdb models add {card.name} --file PATH`")
    dest = Path(dest)
    if dest.is_file() and (not card.sha256 or sha256_hex(dest) == card.sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _probe(card, connect_timeout)
    request = urllib.request.Request(card.url, headers={"User-Agent": "synthdb"})
    try:
        response = urllib.request.urlopen(request, timeout=READ_TIMEOUT_S)
    except (urllib.error.URLError, OSError) as error:
        raise _unreachable(card, getattr(error, "reason", error)) from None
    with response:
        if response.headers.get_content_type() == "text/html":
            raise SynthdbError(f"{card.url} answered with a web page, not {card.file} (Google Drive "
                               "does this for large files): download it in a browser, then run "
                               f"`synthdb models add {card.name} --file PATH`")
        _stream_to(dest, response, card, progress)
    return dest


def _stream_to(dest: Path, response: HTTPResponse, card: ModelCard, progress: bool) -> None:
    length = int(response.headers.get("Content-Length") or 0) or None
    digest, received = hashlib.sha256(), 0
    fd, part = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        bar = progress_bar(length, f"fetch {card.name}", quiet=not progress)
        with os.fdopen(fd, "wb") as out, bar as advance:
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
            except OSError as error:
                raise SynthdbError(f"download of {card.url} broke off after {received} bytes ({error}): "
                                   "run the fetch again") from None
            out.flush()
            os.fsync(out.fileno())
        if length is not None and received != length:
            raise SynthdbError(f"download of {card.url} stopped at {received} of {length} bytes: "
                               "run the fetch again")
        if card.sha256 and digest.hexdigest() != card.sha256:
            raise SynthdbError(f"{card.url} gave a file with sha256 {digest.hexdigest()}, but the "
                               f"{card.name} card says {card.sha256}: the server holds another release "
                               "or a damaged copy; nothing was saved")
        os.replace(part, dest)
    finally:
        if os.path.exists(part):
            os.unlink(part)


def _probe(card: ModelCard, timeout: float) -> None:
    """Open (and close) a TCP connection to the server, or to the proxy urllib would use, within ``timeout``.

    ``socket.create_connection`` bounds the connect but not the DNS lookup before it, which can hang far
    longer on a machine without a resolver; running it in a daemon thread bounds both.
    """
    url = urllib.parse.urlsplit(card.url)
    proxy = urllib.request.getproxies().get(url.scheme)
    target = urllib.parse.urlsplit(proxy) if proxy else url
    address = (target.hostname or "", target.port or (443 if target.scheme == "https" else 80))
    outcome: queue.Queue[BaseException | None] = queue.Queue(maxsize=1)

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            outcome.put(None)
        except OSError as error:
            outcome.put(error)

    threading.Thread(target=connect, daemon=True).start()
    try:
        error = outcome.get(timeout=timeout + 0.5)
    except queue.Empty:
        error = TimeoutError(f"no answer from {address[0]} within {timeout:g} s")
    if error is not None:
        raise _unreachable(card, error)


def _unreachable(card: ModelCard, reason: object) -> SynthdbError:
    return SynthdbError(f"cannot download {card.name} from {card.url} ({reason}): this machine looks "
                        f"offline. Copy {card.file} onto it from a machine with internet, then run "
                        f"`synthdb models add {card.name} --file PATH`")
