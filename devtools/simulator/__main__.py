"""`python -m devtools.simulator [--host H] [--port P] [--seed N] [--standalone]`: the simulator in
the foreground until SIGINT/SIGTERM.

`./dev up` runs it with SIMULATOR_URL pointing here; `./dev simulator ARGS` runs it on its own with
the environment of `./dev manage` (the embedded servers of the same data dir).

By default it reads the database (Django with DJANGO_SETTINGS_MODULE, default config.settings):
- a store named like a channel slug sends that channel's order webhooks (POST /_sim/orders
  {"store": "<slug>", ...}) to PUBLIC_BASE_URL/webhooks/<slug>/, signed with its webhook secret,
  with its kind and default location;
- channels marked `settings.simulator = true` (the `seed_demo` ones) are re-pointed at this
  simulator on start, since `./dev up` may give it a new port each time.
`--standalone` touches no database: orders then need `kind`, `target` and `secret` in the request
(or a store registered with POST /_sim/stores).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from devtools.simulator import Simulator


def _resolve(store: str) -> dict | None:
    """A simulator store named like a channel slug sends that channel's webhooks."""
    from django.conf import settings
    from django.db import close_old_connections

    from channels.models import Channel

    close_old_connections()
    channel = Channel.objects.filter(slug=store).first()
    if channel is None:
        return None
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    return {"kind": channel.kind, "secret": channel.webhook_secret, "webhook_url": f"{base}/webhooks/{channel.slug}/",
            "location": channel.default_location.code if channel.default_location_id else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.simulator", description=(
        "Run the channel simulator (Shopify, WooCommerce, BigCommerce, eBay, Amazon, Standard Webhooks)."))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=None, help="seed for random faults (reproducible runs)")
    parser.add_argument("--standalone", action="store_true",
                        help="no database: orders name their kind, target and secret; no demo channels re-pointed")
    args = parser.parse_args(argv)

    if args.standalone:
        logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
    else:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        django.setup()  # settings' LOGGING applies, as for any manage.py command

    simulator = Simulator(args.host, args.port, seed=args.seed, resolver=None if args.standalone else _resolve)
    simulator.start()
    print(f"channel simulator listening on {simulator.url} (levels: {simulator.url}/_sim/levels)", flush=True)
    if not args.standalone:
        from channels.demo import demo_channels_repoint

        moved = demo_channels_repoint(simulator_url=os.environ.get("SIMULATOR_URL") or simulator.url)
        if moved:
            print(f"re-pointed {moved} demo channel(s) at this simulator", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    simulator.stop()
    print("channel simulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
