# One image for web, worker and beat (docker-compose.yml picks the command).
# Only the production packages are copied: devtools/ (./dev, embedded servers, the channel
# simulator) and tests/ stay out of the image (.dockerignore keeps them out of the context too).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 INVENTORY_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY config ./config
COPY core ./core
COPY inventory ./inventory
COPY reservations ./reservations
COPY channels ./channels
COPY ingestion ./ingestion
COPY analytics ./analytics
COPY live ./live
COPY templates ./templates
COPY manage.py ./
RUN pip install --no-cache-dir -c requirements.lock . \
    && useradd --system --uid 1000 app && mkdir -p /data && chown app /data
# Static files are collected at build time with a throwaway key; whitenoise serves them.
RUN DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput -v 0
USER app
EXPOSE 8000
# ASGI under gunicorn (as `./dev up`): live stock streams hold no thread or database connection,
# API requests run on each worker's long-lived thread pool (docs/live.md). The uvicorn worker sets
# its own request-line limit (bulk stock reads put up to 500 SKU codes in the query string).
CMD ["gunicorn", "config.asgi:application", "--bind", "0.0.0.0:8000", "--worker-class", "live.worker.StocklineUvicornWorker", \
     "--workers", "2"]
