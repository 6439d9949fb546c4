"""A loopback endpoint that accepts every connection and never answers.

What a wedged S3 server, a half-dead proxy or a firewall that lets the handshake through looks
like to a client: the TCP connection opens, the request goes out, and nothing ever comes back.
Every connection is counted and held open until `close()`.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class BlackHole:
    """`with BlackHole() as hole:` → `hole.endpoint`, `hole.connections`."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so the accept loop notices close()
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """How many connections were opened to it so far."""
        with self._lock:
            return len(self._accepted)

    def _accept_forever(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._accepted.append(connection)  # never read from, never answered

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._listener.close()
        with self._lock:
            for connection in self._accepted:
                with contextlib.suppress(OSError):
                    connection.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
