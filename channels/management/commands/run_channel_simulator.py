"""`./dev manage run_channel_simulator --port P`: the channel simulator in the foreground.

`./dev up` starts it (with SIMULATOR_URL pointing here) and `seed_demo` points one channel of
each kind at it. Order webhooks it sends (POST /_sim/orders {"store": "<channel slug>", ...}) go to
PUBLIC_BASE_URL/webhooks/<slug>/, signed with that channel's webhook secret.
"""

import os
import signal
import threading

from django.core.management.base import BaseCommand


def _resolve(store: str) -> dict | None:
    """A simulator store named like a channel slug sends that channel's webhooks."""
    from django.db import close_old_connections

    from channels.models import Channel

    close_old_connections()
    channel = Channel.objects.filter(slug=store).first()
    if channel is None:
        return None
    from django.conf import settings

    base = settings.PUBLIC_BASE_URL.rstrip("/")
    return {"kind": channel.kind, "secret": channel.webhook_secret, "webhook_url": f"{base}/webhooks/{channel.slug}/",
            "location": channel.default_location.code if channel.default_location_id else None}


class Command(BaseCommand):
    help = "Run the channel simulator (Shopify, WooCommerce, BigCommerce, eBay, Amazon, Standard Webhooks)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--seed", type=int, default=None, help="seed for random faults (reproducible runs)")

    def handle(self, *args, host, port, seed, **options):
        from channels.demo import demo_channels_repoint
        from channels.simulator import Simulator

        simulator = Simulator(host, port, seed=seed, resolver=_resolve).start()
        self.stdout.write(f"channel simulator listening on {simulator.url} (levels: {simulator.url}/_sim/levels)")
        # `./dev up` may give the simulator a new port each start: bring the demo channels along.
        moved = demo_channels_repoint(simulator_url=os.environ.get("SIMULATOR_URL") or simulator.url)
        if moved:
            self.stdout.write(f"re-pointed {moved} demo channel(s) at this simulator")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        simulator.stop()
        self.stdout.write("channel simulator stopped")
