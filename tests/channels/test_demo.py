import pytest

from channels.demo import demo_channels_repoint
from channels.models import Channel, ChannelListing, DirtyPair
from channels.propagation import channel_push
from inventory.demo import demo_seed

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_one_simulated_channel_of_each_kind_idempotently(settings, simulator):
    settings.SIMULATOR_URL = "http://127.0.0.1:9"  # the port a previous `./dev up` used
    demo_seed()
    demo_seed()
    channels = Channel.objects.filter(slug__startswith="demo-")
    assert sorted(channels.values_list("kind", flat=True)) == sorted(
        ["shopify", "woocommerce", "bigcommerce", "ebay", "amazon", "webhook"])
    assert ChannelListing.objects.filter(channel__in=channels).count() == 6 * 5
    assert all(c.base_url == f"http://127.0.0.1:9/s/{c.slug}" and c.default_location.code == "wh-main"
               for c in channels)
    # the simulator starting elsewhere brings the demo channels along, and they push there
    assert demo_channels_repoint(simulator_url=simulator.url) == 6
    for channel in channels:
        channel_push(channel_id=channel.pk)
    assert not DirtyPair.objects.exists()
    shown = simulator.state.levels()["stores"]
    assert set(shown) == {c.slug for c in channels} and all(len(s["levels"]) == 5 for s in shown.values())
    assert shown["demo-amazon"]["levels"]["MUG-LOGO"] == 300 - 5 - 2  # safety stock 5, buffer 2 units
