"""A TCP server on 127.0.0.1 for the tests of socket receivers: a subclass says what to do with each
connection the receiver makes (``serve``), and the accepting runs in a daemon thread until ``close``."""
from __future__ import annotations

import socket
import threading


class TcpServer:
    """Listens on 127.0.0.1 (``port`` 0: a free one, then in ``self.port``) and hands each accepted connection
    to ``serve(conn)`` in its thread; ``serve`` returns True to accept the next one. ``closed`` is set by
    ``close``, for a ``serve`` that sends until then."""

    #: seconds between checks of ``closed`` while no receiver connects
    poll = 0.1

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))  # SO_REUSEADDR on POSIX
        self.sock.settimeout(self.poll)
        self.port: int = self.sock.getsockname()[1]
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def serve(self, conn: socket.socket) -> bool:
        """Handle one connection; True to go on accepting."""
        raise NotImplementedError

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:  # closed
                return
            if not self.serve(conn):
                return

    def close(self) -> None:
        """Stop accepting (and a ``serve`` that waits for ``closed``); the thread is gone when it returns."""
        self.closed.set()
        self.sock.close()
        self._thread.join(5.0)
