"""Settings: every value that varies comes from the environment (listed in README.md).

`./dev` starts embedded PostgreSQL/Redis and exports DATABASE_URL/REDIS_URL before Django loads,
so the application only ever reads URLs, exactly as it does in production.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DATA_DIR = Path(env.str("INVENTORY_DATA_DIR", default=str(BASE_DIR / ".local"))).resolve()
TESTING = env.bool("INVENTORY_TESTING", default=False)


def _secret_key() -> str:
    """DJANGO_SECRET_KEY, or one generated on first start and kept (0600) in the data dir.

    Never a key committed to the repository.
    """
    if key := env.str("DJANGO_SECRET_KEY", default=""):
        return key
    path = DATA_DIR / "secret-key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        path.chmod(0o600)
        return key


SECRET_KEY = _secret_key()
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "core",
    "inventory",
    "reservations",
    "channels",
    "ingestion",
    "analytics",
    "live",
]

MIDDLEWARE = [
    # Outermost: the request id covers every log line of the request, and the HTTP metrics time
    # and count every answer, refusals by the middlewares below included (docs/observability.md).
    "core.observability.middleware.ObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Innermost, and synchronous only: under ASGI (config.asgi) Django then runs every middleware
    # above as one synchronous call on the request's thread, instead of hopping between the event
    # loop and the thread for each hook of each middleware (about a dozen hops per request, most of
    # a bare request's CPU; docs/performance.md). Still before URL resolution and every query.
    "core.middleware.RejectNulMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- PostgreSQL is the truth. No SQLite fallback: the locking code needs the real thing.
DATABASES = {"default": env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/inventory")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
# Off (Django's default): the check is a `SELECT 1` round trip at the start of every request, a
# third of a stock read's cost. Without it, a connection the database dropped (a restart) fails
# the one request that finds it, then is replaced (docs/performance.md); 1 turns it back on.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=False)
DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = env.bool("DB_SERVER_SIDE_BINDING", default=True)
# Behind a transaction-pooling PgBouncer, Django's docs ask for server-side cursors off (a cursor
# would outlive the transaction that made it on the pooled connection): DB_TRANSACTION_POOLING=1.
_transaction_pooling = env.bool("DB_TRANSACTION_POOLING", default=False)
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = _transaction_pooling
# Prepared statements (psycopg prepares a statement on its connection once it has run this many
# times; Django's default None never does): the hot paths repeat a few statements, and parsing and
# planning them again on every request was most of PostgreSQL's CPU per sale (docs/performance.md).
# 0 turns it off (e.g. behind a PgBouncer older than 1.21, whose transaction pooling cannot carry them).
_prepare = env.int("DB_PREPARE_THRESHOLD", default=5)
DATABASES["default"]["OPTIONS"]["prepare_threshold"] = _prepare if _prepare > 0 and not _transaction_pooling else None
# The planner's cost of a random page read, for this application's connections. PostgreSQL's default
# (4) prices an index probe as a disk seek; with the working set in memory the generic plans of the
# hot statements then hashed whole tables (every SKU and position, a sequential scan per checkout
# batch and per bulk read at 1,100 rows) instead of probing the ten rows they want (docs/performance.md,
# session 10). 1.1 is the usual value for data in RAM or on SSD; empty keeps the server's. Sent as a
# startup option, which a transaction-pooling PgBouncer refuses: there, set it on the server instead
# (ALTER DATABASE ... SET random_page_cost = 1.1). Added to any `options` DATABASE_URL already gives.
_random_page_cost = env.str("DB_RANDOM_PAGE_COST", default="1.1")
if _random_page_cost and not _transaction_pooling:
    _options = DATABASES["default"]["OPTIONS"]
    _options["options"] = " ".join(filter(None, [_options.get("options", ""),
                                                 f"-c random_page_cost={float(_random_page_cost)}"]))
# No ATOMIC_REQUESTS: services own their transactions (see docs/ARCHITECTURE.md).
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, pub/sub, shared rate limits, and the default Celery broker.
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "core.cache.SharedRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "inv",
        # One pool per process: Django's default made a new Redis connection per ASGI request.
        "OPTIONS": {"pool_class": "core.cache.SharedConnectionPool"},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"  # `collectstatic` target in images; dev serves from finders
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve the admin's assets straight from the app folders: no collectstatic step in development.
WHITENOISE_USE_FINDERS = True

# Webhooks may be up to 1 MiB (contract); Django must not refuse them first with a 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["core.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["core.permissions.HasScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "core.schema.AutoSchema",  # adds the answers every view shares
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Stockline inventory API",
    "DESCRIPTION": "Real-time multichannel inventory: stock, reservations, events, channels.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "core.schema.strict_request_bodies"],
    # Each status field has its own component, named after what it is the status of.
    "ENUM_NAME_OVERRIDES": {
        "ChannelKindEnum": "channels.models.Channel.Kind",
        "LocationKindEnum": "inventory.models.Location.Kind",
        "InboundEventStatusEnum": "ingestion.models.InboundEvent.Status",
        "DeadLetterStatusEnum": "channels.models.DeadLetter.Status",
        "AlertKindEnum": "analytics.models.Alert.KINDS",
    },
}

# An API key that authenticated is trusted this many seconds without reading it again (core.auth):
# a revocation takes effect within this window in every web process (docs/performance.md).
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=5.0)
# Likewise the channel a webhook URL names (ingestion.views): another web process sees a changed
# webhook secret or a deactivated channel within this window; the process that saved it at once.
WEBHOOK_CHANNEL_CACHE_SECONDS = env.float("WEBHOOK_CHANNEL_CACHE_SECONDS", default=5.0)

# Idempotency-Key records are kept at least this long (contract: >= 24 h).
IDEMPOTENCY_TTL_HOURS = env.int("IDEMPOTENCY_TTL_HOURS", default=48)
# The hot paths (a sale, a checkout reservation) insert their Idempotency-Key claim in the same
# statement as the change: one transaction and round trip fewer (core.idempotency). False: claim
# first, in a transaction of its own, as every other endpoint does.
IDEMPOTENCY_IN_STATEMENT = env.bool("IDEMPOTENCY_IN_STATEMENT", default=True)

# --- Reservations (docs/reservations.md)
RESERVATION_DEFAULT_TTL_SECONDS = env.int("RESERVATION_DEFAULT_TTL_SECONDS", default=900)
RESERVATION_MAX_TTL_SECONDS = env.int("RESERVATION_MAX_TTL_SECONDS", default=86400)
RESERVATION_MAX_LINES = env.int("RESERVATION_MAX_LINES", default=100)
RESERVATION_WAITLIST_MAX_SECONDS = env.int("RESERVATION_WAITLIST_MAX_SECONDS", default=7 * 86400)
# How often beat runs the expiry sweep: a reservation outlives its deadline by at most this long.
RESERVATION_EXPIRY_INTERVAL_SECONDS = env.int("RESERVATION_EXPIRY_INTERVAL_SECONDS", default=30)
RESERVATION_EXPIRY_BATCH_SIZE = env.int("RESERVATION_EXPIRY_BATCH_SIZE", default=200)

# What reacts to a stock change, inside its transaction, in this order (inventory.hooks):
# waiting reservations take freed units first, then the channel outbox marks every position the
# transaction changed (the waitlist's included) in one statement.
# A plain sale runs as one statement with the reactions' statement forms (inventory.sale_statement);
# off: every sale takes the general locking path (kept for comparison and for its tests).
STOCK_SALE_ONE_STATEMENT = env.bool("STOCK_SALE_ONE_STATEMENT", default=True)
# Sales of one position waiting in one web process at the same time are made by one statement
# (inventory.sale_group): one lock and one commit for the lot, each with its own ledger row.
STOCK_SALE_GROUP_COMMIT = env.bool("STOCK_SALE_GROUP_COMMIT", default=True)
# Likewise a checkout reservation held whole at the first eligible location (reservations.create_statement).
RESERVATION_ONE_STATEMENT = env.bool("RESERVATION_ONE_STATEMENT", default=True)
# Single-line checkouts on one channel (any SKUs) waiting in one web process at the same time are made
# by one statement (reservations.group_commit): one commit for the lot, each still all or nothing.
RESERVATION_GROUP_COMMIT = env.bool("RESERVATION_GROUP_COMMIT", default=True)
# The reservation statement runs with a generic (reused) plan where statements are prepared (inventory.one_statement).
ONE_STATEMENT_GENERIC_PLAN = env.bool("ONE_STATEMENT_GENERIC_PLAN", default=True)
STOCK_CHANGE_REACTIONS = [
    "reservations.waitlist.waitlist_on_stock_change",
    "channels.propagation.outbox_on_stock_change",
    # Last: after commit, announce every changed SKU to the live streams (docs/live.md).
    "live.publish.stock_change_publish",
    # Marks the changed SKUs for the 30 s alert evaluation (docs/analytics.md, "Alerts").
    "analytics.alerts.alerts_on_stock_change",
]
# Alerts (docs/analytics.md): emailed to these addresses (comma-separated; empty = no mail).
ALERT_EMAIL_RECIPIENTS = env.list("ALERT_EMAIL_RECIPIENTS", default=[])
ALERT_DELIVERY_MAX_ATTEMPTS = env.int("ALERT_DELIVERY_MAX_ATTEMPTS", default=8)
ALERT_DELIVERY_BACKOFF_BASE = 5.0  # seconds; doubles per attempt, capped, full jitter (core.backoff)
ALERT_DELIVERY_BACKOFF_CAP = 3600.0
# Demo data of the apps above inventory, seeded after inventory's own (`seed_demo`).
DEMO_SEED_EXTENSIONS = ["channels.demo.demo_channels_seed", "live.demo.storefront_keys_seed"]

# --- Celery (at-least-once; see config/celery.py for the periodic schedule)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A message not acknowledged within this window is redelivered by Redis; task time limits stay
# well below it so a slow task is killed before it can be run twice concurrently.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 270
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes the database connections around every task (a new PostgreSQL
# connection per drain batch). N > 0: it recycles them only every N tasks, and
# core.celery_connections gives each task a request's connection handling instead. Off by
# default: on this project's 2-core benchmark host, reuse (10000) cut the connections opened but
# the 2,900 events/s drain's p99 came out higher in 3 of 3 alternating pairs, within a noise we
# could not separate it from (docs/performance.md, session 7).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=0) or None
# Task events (received/started/succeeded/failed, and task-sent from publishers) for `celery
# events`. Off by default: they were ~15 % of the worker's CPU under a webhook stream (one publish
# per event, whether or not anyone listens). Flower turns the worker events on by itself (its
# `enable_events`, on by default); CELERY_TASK_EVENTS=1 sends them all from the start.
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("CELERY_TASK_EVENTS", default=False)
CELERY_TASK_SEND_SENT_EVENT = CELERY_WORKER_SEND_TASK_EVENTS

# --- Logging: one line per event to stdout; `./dev up` prefixes it with the process name.
# LOG_FORMAT=json: one JSON object per line (for a log shipper); otherwise readable text. Every
# line carries the request id that follows a change into its Celery tasks (docs/observability.md).
LOG_FORMAT = env.str("LOG_FORMAT", default="text").strip().lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_context": {"()": "core.observability.logs.RequestContextFilter"}},
    "formatters": {
        "plain": {"()": "core.observability.logs.TextFormatter"},
        "json": {"()": "core.observability.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["request_context"],
                             "formatter": "json" if LOG_FORMAT == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Metrics (docs/observability.md): GET /metrics is open from loopback; from elsewhere it
# needs `Authorization: Bearer <METRICS_TOKEN>` (unset: 404). PROMETHEUS_MULTIPROC_DIR (read by
# prometheus-client itself) sums the counters of every gunicorn and Celery process.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Gauges of database state computed at scrape time, by the composition root (core may not read
# the tables of the apps above it).
METRICS_COLLECTORS = ["config.metrics.StockStateCollector"]

# This service's own base URL as others reach it (the simulator sends its webhooks here).
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")

# --- Ingestion (docs/ingestion.md): events a drain task applies per transaction, and how many
# attempts a transiently failing event gets before it is marked failed (then reprocess by hand).
# Events per drain transaction: applied set-based (a handful of statements per batch), so larger
# batches cost less per event; 250 keeps one batch well under the 500 ms receipt -> applied goal.
INGESTION_BATCH_SIZE = env.int("INGESTION_BATCH_SIZE", default=250)
# Drain partitions: events hash onto them by SKU (or by order for marketplace orders); one drain at
# a time per partition, partitions in parallel on any worker host (docs/ingestion.md, Scale-out).
# Each partition's batches carry a fixed cost (~18 statements, one task), so on one small host a
# single partition answers fastest (measured: receipt -> applied p50 149 ms with 1, 552 ms with 2
# at 300 events/s on 2 cores); raise it to the worker processes when adding worker hosts.
INGESTION_PARTITIONS = env.int("INGESTION_PARTITIONS", default=1)
# Route partition p's drains to the Celery queue `ingestion-<p>` (workers subscribe with -Q), e.g.
# to pin partitions to hosts; off: every drain on the default queue, any worker takes any.
INGESTION_PARTITION_QUEUES = env.bool("INGESTION_PARTITION_QUEUES", default=False)
# A running drain claims at most once per this many milliseconds while its batches come back
# short of INGESTION_BATCH_SIZE: under a stream of single webhooks, batches of a few events each
# paid a batch's fixed cost (about 10 statements) per few events. Full batches never wait.
INGESTION_DRAIN_LINGER_MS = env.int("INGESTION_DRAIN_LINGER_MS", default=50)
# After a process finds a partition's wake-up flag set (a drain is queued or running), it asks
# Redis no more for this many milliseconds; the drain that clears the flag claims once more this
# long after (ingestion.scheduling._kick). One Redis call per webhook ack was a fifth of its own
# CPU. 0: ask on every commit. Give web and worker processes the same value: a worker's shorter
# period would let its drain finish before a web process's period ends.
INGESTION_KICK_QUIET_MS = env.int("INGESTION_KICK_QUIET_MS", default=100)
# The drain keeps each batch's channels (their mapping, settings, authoritative locations) in the
# process this many seconds; a change saved in that process applies at once, elsewhere within it.
DRAIN_CHANNEL_CACHE_SECONDS = env.float("DRAIN_CHANNEL_CACHE_SECONDS", default=5.0)
INGESTION_MAX_ATTEMPTS = env.int("INGESTION_MAX_ATTEMPTS", default=8)
# Fetching what thin webhooks leave out (BigCommerce order products) runs in its own task, per
# channel: a run starts no new request after this many seconds (one worker slot held at most
# this long plus one request), and each request gives up after the timeout (connect and read).
INGESTION_FETCH_BUDGET_SECONDS = env.float("INGESTION_FETCH_BUDGET_SECONDS", default=10.0)
INGESTION_FETCH_TIMEOUT_SECONDS = env.float("INGESTION_FETCH_TIMEOUT_SECONDS", default=5.0)

# --- Channels: the Shopify GraphQL Admin API version for channels whose settings name none. Each
# stable version is supported about a year (https://shopify.dev/docs/api/usage/versioning): keep
# this one Shopify currently supports. A channel's own `settings.api_version` is always respected.
SHOPIFY_API_VERSION = env.str("SHOPIFY_API_VERSION", default="2026-10")

# --- Channels: eBay's daily revisions per listing (docs/propagation.md#ebay-inventory-api). eBay
# allows about 250 per listing per calendar day; each channel may lower these in its settings
# (`revisions_per_day`, `revision_reserve`, `revision_low_stock`, `revision_tight`).
EBAY_REVISIONS_PER_DAY = env.int("EBAY_REVISIONS_PER_DAY", default=250)
EBAY_REVISION_RESERVE = env.int("EBAY_REVISION_RESERVE", default=25)  # kept for quantities near zero
EBAY_REVISION_LOW_STOCK = env.int("EBAY_REVISION_LOW_STOCK", default=3)  # "near zero": at or below this
EBAY_REVISION_TIGHT = env.int("EBAY_REVISION_TIGHT", default=50)  # fewer left: one per (time left / left)
EBAY_REVISION_DAY_TIMEZONE = env.str("EBAY_REVISION_DAY_TIMEZONE", default="America/Los_Angeles")

# --- Channels: Amazon (docs/propagation.md#amazon-sp-api). At least this many changed SKUs in one
# drain go as one JSON_LISTINGS_FEED instead of one patchListingsItem each (channel
# `settings.feed_threshold` overrides); a feed without a result after the timeout fails its SKUs
# (one attempt each), which are then sent again.
AMAZON_FEED_THRESHOLD = env.int("AMAZON_FEED_THRESHOLD", default=50)
AMAZON_FEED_TIMEOUT_SECONDS = env.int("AMAZON_FEED_TIMEOUT_SECONDS", default=3600)

# --- Snapshots and analytics (docs/analytics.md). 5-minute snapshot rows are kept this many days,
# then only the hourly rollups remain, kept SNAPSHOT_ROLLUP_RETENTION_DAYS (each position's newest
# hourly row is kept beyond: it is the level carried forward).
SNAPSHOT_RETENTION_DAYS = env.int("SNAPSHOT_RETENTION_DAYS", default=14)
SNAPSHOT_ROLLUP_RETENTION_DAYS = env.int("SNAPSHOT_ROLLUP_RETENTION_DAYS", default=365)
# The daily-sales table counts ledger rows recorded at least this long before each refresh (a
# transaction commits well within it); readers add the younger rows from the ledger.
ANALYTICS_LEDGER_SETTLE_SECONDS = env.int("ANALYTICS_LEDGER_SETTLE_SECONDS", default=600)
# Daily sales are kept this long (fast movers' `days` goes up to 90; safety stock reads 28).
ANALYTICS_DAILY_SALES_RETENTION_DAYS = env.int("ANALYTICS_DAILY_SALES_RETENTION_DAYS", default=100)
# Dynamic safety stock = ceil(z x sigma(daily units, 28 days) x sqrt(lead time)); z 1.65 is about a
# 95% cycle service level. SKUs with fewer days of history than the minimum keep their value.
ANALYTICS_SAFETY_STOCK_Z = env.float("ANALYTICS_SAFETY_STOCK_Z", default=1.65)
ANALYTICS_SAFETY_STOCK_MIN_DAYS = env.int("ANALYTICS_SAFETY_STOCK_MIN_DAYS", default=7)

# --- Live stock (docs/live.md): server-sent events over Redis pub/sub, the demo storefront.
# A comment line is written to every open stream this often (contract: at least every 15 s).
LIVE_HEARTBEAT_SECONDS = env.float("LIVE_HEARTBEAT_SECONDS", default=10.0)
# A stream ends after this long; the browser reconnects at once with Last-Event-ID (nothing is
# lost), which spreads clients over the web processes again and re-checks the key.
LIVE_STREAM_MAX_SECONDS = env.int("LIVE_STREAM_MAX_SECONDS", default=3600)
LIVE_REDIS_PREFIX = env.str("LIVE_REDIS_PREFIX", default="stockline:live:")
# Under ASGI (config.asgi), how many threads per process run synchronous views: the API's
# concurrency per process, as gunicorn's --threads was (live.asgi).
ASGI_SYNC_THREADS = env.int("ASGI_SYNC_THREADS", default=8)
# Under ASGI, run each API request's synchronous part as one call on its thread (live.asgi.
# OneCallHandler); off: Django's own ASGI handler, which hops between loop and thread per step.
ASGI_ONE_CALL = env.bool("ASGI_ONE_CALL", default=True)
# Demo mode puts the storefront's demo API keys into /storefront/ (`./dev up` turns it on). Off:
# the page asks the visitor for keys; no key is ever served.
DEMO_MODE = env.bool("STOCKLINE_DEMO", default=False)

# Only `./dev manage bench_http` sets this, on the server it starts: mounts the bare view the hot
# paths are compared with at /_bench/bare/ (config/urls.py, docs/performance.md).
BENCH_BARE_VIEW = env.bool("STOCKLINE_BENCH_BARE_VIEW", default=False)

# Where the channel simulator listens when `./dev up` runs it (seed_demo points channels there).
SIMULATOR_URL = env.str("SIMULATOR_URL", default="http://127.0.0.1:8765")
