"""Observability: request ids that follow work into Celery, structured logs, Prometheus metrics.

- `context`: the current request id (and task) in contextvars.
- `logs`: the logging filter and the text/JSON formatters (settings.LOGGING picks one).
- `middleware`: request id in and out, HTTP metrics (no database work per request).
- `metrics`: metric objects, multiprocess set-up, the per-scrape registry.
- `celery_signals`: carries the request id through task headers; task metrics.
- `views`: `GET /metrics` and its access rule (loopback, or the METRICS_TOKEN bearer).

Core is the lowest package: gauges of other apps' tables are produced by collectors named in
`settings.METRICS_COLLECTORS` (config/metrics.py), like `STOCK_CHANGE_REACTIONS`.
See docs/observability.md.
"""
