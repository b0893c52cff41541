"""The ASGI entry point `./dev up` serves (gunicorn with live.worker.StocklineUvicornWorker):
Django's application inside live.asgi, which picks the thread for each request's synchronous
parts (the API on long-lived threads, streams on none; see docs/live.md)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from live.asgi import application_wrap  # noqa: E402 - needs the settings configured above

application = application_wrap(django_application)
