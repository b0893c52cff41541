"""A change that lands while a pair's last attempt is in flight survives the dead letter.
(Found by review: the dead letter deleted the newer mark, so the newer quantity was never pushed.)"""

import pytest

from channels.models import DeadLetter, DirtyPair
from channels.propagation import channel_push
from channels.propagation import push as propagation  # where the push loop calls _send
from inventory import services as stock

pytestmark = pytest.mark.django_db


def test_mark_during_the_last_attempt_is_pushed_after_recovery(simulator, make_channel, list_sku, location, sku,
                                                                monkeypatch):
    from devtools.simulator import Faults

    # given: a channel that dead-letters after one attempt, and is down
    channel = make_channel("shopify", retry={"max_attempts": 1, "base_delay": 0.01, "max_delay": 0.02},
                           circuit={"failure_threshold": 100, "cooldown_seconds": 60})
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=12)
    simulator.state.faults["*"] = Faults(down=True)
    real_send = propagation._send

    def send_while_a_sale_commits(channel, batch, listings):
        result = real_send(channel, batch, listings)
        if not getattr(send_while_a_sale_commits, "done", False):
            send_while_a_sale_commits.done = True
            stock.stock_sell(sku=sku, location=location, quantity=5)  # lands during the request
        return result

    monkeypatch.setattr(propagation, "_send", send_while_a_sale_commits)
    # when: the last attempt fails
    channel_push(channel_id=channel.pk)
    # then: the failed quantity is dead-lettered, but the newer mark is kept
    assert DeadLetter.objects.get(channel=channel).quantity == 12
    assert DirtyPair.objects.filter(channel=channel).count() == 1
    # and once the channel is back, the current quantity goes out and closes the letter
    simulator.state.faults.clear()
    assert channel_push(channel_id=channel.pk).pushed == 1
    assert DeadLetter.objects.get(channel=channel).status == DeadLetter.Status.SUPERSEDED


def test_deactivating_a_location_pushes_without_its_stock(simulator, make_channel, list_sku, location,
                                                          other_location, sku):
    """Channels sell only from active locations: switching one off must reach them at once.
    (Found by review: nothing was marked, marketplaces kept selling the closed location's stock.)"""
    channel = make_channel("webhook")
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=5)
    stock.stock_receive(sku=sku, location=other_location, quantity=3)
    channel_push(channel_id=channel.pk)
    shown = lambda: simulator.state.levels(channel.slug)["levels"][sku.code]  # noqa: E731
    assert shown() == 8

    stock.location_update(location=other_location, active=False)
    channel_push(channel_id=channel.pk)
    assert shown() == 5

    stock.location_update(location=other_location, active=True)
    channel_push(channel_id=channel.pk)
    assert shown() == 8
