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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.RejectNulMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# No ATOMIC_REQUESTS: services own their transactions (see docs/ARCHITECTURE.md).
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, pub/sub, shared rate limits, and the default Celery broker.
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "inv",
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
    # Each status field has its own component, named after what it is the status of.
    "ENUM_NAME_OVERRIDES": {
        "ChannelKindEnum": "channels.models.Channel.Kind",
        "LocationKindEnum": "inventory.models.Location.Kind",
        "InboundEventStatusEnum": "ingestion.models.InboundEvent.Status",
        "DeadLetterStatusEnum": "channels.models.DeadLetter.Status",
    },
}

# Idempotency-Key records are kept at least this long (contract: >= 24 h).
IDEMPOTENCY_TTL_HOURS = env.int("IDEMPOTENCY_TTL_HOURS", default=48)

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
STOCK_CHANGE_REACTIONS = [
    "reservations.waitlist.waitlist_on_stock_change",
    "channels.propagation.outbox_on_stock_change",
]
# Demo data of the apps above inventory, seeded after inventory's own (`seed_demo`).
DEMO_SEED_EXTENSIONS = ["channels.demo.demo_channels_seed"]

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

# --- Logging: one line per event to stdout; `./dev up` prefixes it with the process name.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# This service's own base URL as others reach it (the simulator sends its webhooks here).
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")

# --- Ingestion (docs/ingestion.md): events a drain task applies per transaction, and how many
# attempts a transiently failing event gets before it is marked failed (then reprocess by hand).
INGESTION_BATCH_SIZE = env.int("INGESTION_BATCH_SIZE", default=100)
INGESTION_MAX_ATTEMPTS = env.int("INGESTION_MAX_ATTEMPTS", default=8)
# Fetching what thin webhooks leave out (BigCommerce order products) runs in its own task, per
# channel: a run starts no new request after this many seconds (one worker slot held at most
# this long plus one request), and each request gives up after the timeout (connect and read).
INGESTION_FETCH_BUDGET_SECONDS = env.float("INGESTION_FETCH_BUDGET_SECONDS", default=10.0)
INGESTION_FETCH_TIMEOUT_SECONDS = env.float("INGESTION_FETCH_TIMEOUT_SECONDS", default=5.0)

# Where the channel simulator listens when `./dev up` runs it (seed_demo points channels there).
SIMULATOR_URL = env.str("SIMULATOR_URL", default="http://127.0.0.1:8765")
