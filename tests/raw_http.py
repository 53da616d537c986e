"""An HTTP/1.1 client on a bare socket for request-limit tests and probes.

``httpx`` writes the whole body before it reads the answer, so a server that answers early (413
after the first megabyte, 401 before the body) looks to it like a broken connection. This client
sends the body piece by piece and stops as soon as the server has answered, and says how much of
the body went out by then. :class:`HealthWatch` polls ``/healthz`` meanwhile and keeps its
latencies.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the first byte sent to the whole answer read
    sent: int  # body bytes written before the answer came (or all of them)


def _pieces(body: bytes | Iterable[bytes], size: int) -> Iterator[bytes]:
    if isinstance(body, bytes):
        for start in range(0, len(body), size):
            yield body[start : start + size]
    else:
        yield from body


def _read_response(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection without an answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def send_request(
    url: str,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] = b"",
    *,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
    content_length: int | None = None,
    piece: int = 64 * 1024,
    timeout: float = 300.0,
) -> RawResponse:
    """Sends one request and returns the answer; the body goes out in ``piece``-byte writes
    (``Transfer-Encoding: chunked`` when ``chunked``, else with ``Content-Length``, which needs
    ``body`` as bytes) until it is all sent or the server has answered.

    ``content_length`` declares a length other than the body's: with an empty ``body`` only the
    headers go out, which shows whether the server answers without waiting for the body.
    """
    parts = urlsplit(url)
    head = {"Host": parts.netloc, "Content-Type": "application/json", **(headers or {})}
    if chunked:
        head["Transfer-Encoding"] = "chunked"
    else:
        assert isinstance(body, bytes), "a body without chunked encoding needs its length"
        head["Content-Length"] = str(len(body) if content_length is None else content_length)
    request = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    deadline = time.monotonic() + timeout
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        start = time.monotonic()
        sock.sendall(request.encode("latin-1") + b"\r\n")
        sent = 0
        answered = False
        try:
            for chunk in _pieces(body, piece):
                if select.select([sock], [], [], 0)[0]:
                    answered = True
                    break
                frame = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
                sock.sendall(frame)
                sent += len(chunk)
            if chunked and not answered:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while the body was still going out
        status, response_headers, response_body = _read_response(sock, deadline)
        return RawResponse(status, response_headers, response_body, time.monotonic() - start, sent)


@dataclass
class HealthWatch:
    """Polls ``GET <url>/healthz`` every ``interval`` seconds in a thread while in a ``with``
    block; ``latencies`` holds the time of each answer (a stalled server shows as a long one)."""

    url: str
    interval: float = 0.05
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _first: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        with httpx.Client(timeout=120.0) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    ok = client.get(f"{self.url}/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.monotonic() - start)
                self.failures += not ok
                self._first.set()
                self._stop.wait(self.interval)

    def __enter__(self) -> HealthWatch:
        """Starts polling and returns once the first answer is in."""
        self._thread = threading.Thread(target=self._run, name="healthz-watch", daemon=True)
        self._thread.start()
        self._first.wait(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=180)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)


def many_keys_body(keys: int, *, prefix: dict | None = None) -> bytes:
    """A JSON job spec with ``keys`` extra top-level keys (``"key0000001": 0`` ...), 17
    bytes each: 3 M keys are 51 MB."""
    import json

    head = json.dumps(prefix or {"kind": "pretrain", "preset": "fashion-mnist-lt"})[:-1]
    return head.encode() + b"".join(b', "key%07d": 0' % i for i in range(keys)) + b"}"
