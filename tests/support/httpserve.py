"""A throwaway HTTP(S) server on a loopback port, in a thread: for the tests that stand in for a store, a
dataset host or an API server with a handler of their own."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def serving(
    handler: Callable[..., http.server.BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """``handler`` (a request handler class, or a factory of one) served on 127.0.0.1, over TLS when
    ``tls`` is given; yields the base URL (``http(s)://127.0.0.1:PORT``); shut down and closed after."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
