"""Serving a WSGI app from a thread, for the stand-ins and the tests' own small servers."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


def serve_in_thread(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, name: str, request_handler: Any = None
) -> tuple[BaseWSGIServer, threading.Thread]:
    """`app` served on `host`:`port` (0: any free port) by a daemon thread, threaded.

    The listening socket does not block: a connection that the readiness check saw but that is
    gone by the time of `accept` costs one poll, never a serving thread stuck in `accept` that
    `shutdown()` would wait for forever. Stopping waits for one poll: it is kept short.
    """
    options = {"request_handler": request_handler} if request_handler else {}
    server = make_server(host, port, app, threaded=True, **options)
    server.socket.setblocking(False)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, name=name, daemon=True
    )
    thread.start()
    return server, thread
