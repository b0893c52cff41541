import base64
import time

from channels.adapters.signing import (
    standard_webhooks_key,
    standard_webhooks_sign,
    standard_webhooks_verify,
)

# The Standard Webhooks reference libraries' test vector.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_matches_the_specification_test_vector():
    assert standard_webhooks_sign(SECRET, MSG_ID, TIMESTAMP, BODY) == EXPECTED


def test_verify_accepts_any_of_several_signatures_within_tolerance():
    header = f"v1,bm90LWl0 v2,whatever {EXPECTED}"
    assert standard_webhooks_verify(SECRET, MSG_ID, str(TIMESTAMP), header, BODY, now=TIMESTAMP + 299)


def test_verify_refuses_stale_or_future_timestamps_tampering_and_missing_parts():
    assert not standard_webhooks_verify(SECRET, MSG_ID, str(TIMESTAMP), EXPECTED, BODY, now=TIMESTAMP + 301)
    assert not standard_webhooks_verify(SECRET, MSG_ID, str(TIMESTAMP), EXPECTED, BODY, now=TIMESTAMP - 301)
    assert not standard_webhooks_verify(SECRET, MSG_ID, str(TIMESTAMP), EXPECTED, BODY + b" ", now=TIMESTAMP)
    assert not standard_webhooks_verify(SECRET, "msg_other", str(TIMESTAMP), EXPECTED, BODY, now=TIMESTAMP)
    assert not standard_webhooks_verify(SECRET, MSG_ID, "not-a-number", EXPECTED, BODY, now=TIMESTAMP)
    assert not standard_webhooks_verify(SECRET, MSG_ID, str(TIMESTAMP), None, BODY, now=TIMESTAMP)
    assert not standard_webhooks_verify("", MSG_ID, str(TIMESTAMP), EXPECTED, BODY, now=TIMESTAMP)


def test_secret_forms():
    assert standard_webhooks_key(SECRET) == base64.b64decode(SECRET[6:])
    assert standard_webhooks_key("plain") == b"plain"
    assert standard_webhooks_key(b"raw-bytes") == b"raw-bytes"
    now = int(time.time())
    signature = standard_webhooks_sign(b"utf8-secret", "id1", now, b"{}")
    assert standard_webhooks_verify("utf8-secret", "id1", now, signature, b"{}")
