"""The gunicorn worker class that serves `config.asgi` (`./dev up`; see docs/live.md).

gunicorn keeps doing what it did for the WSGI app (processes, restarts, graceful stops); each
worker runs uvicorn's event loop, so a server-sent events stream costs a coroutine, not a
thread. Settings gunicorn's own flags do not reach:
- request lines and headers up to 1 MiB (h11's default is 16 KiB): `GET /api/v1/stock/?sku=`
  carries up to 500 codes (gunicorn ran with --limit-request-line 0 for the same reason);
- no uvicorn access log: it prints the query string, and a stream's `?key=` must not reach a
  log (every request already has its `stockline.request` line, without the query string);
- open streams are cut 3 s into a graceful stop (they would otherwise hold the worker until
  gunicorn's graceful timeout); browsers reconnect elsewhere with Last-Event-ID.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # uvicorn points to the separate uvicorn-worker package; the class still ships with uvicorn.
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker


class StocklineUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {
        "loop": "asyncio",
        "http": "h11",
        "lifespan": "auto",
        "access_log": False,
        "h11_max_incomplete_event_size": 1024 * 1024,
        "timeout_graceful_shutdown": 3,
    }
