"""The one backoff formula: exponential with full jitter.

Used for marketplace push retries (channels.propagation) and inbound-event retries
(ingestion.scheduling). Full jitter spreads the retries of many pairs or events, and of many
workers, apart instead of letting them hit a recovering marketplace or database together.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(*, attempt: int, base: float, cap: float, floor: float = 0.0,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the `attempt`-th failure: uniform in
    [floor, max(floor, min(cap, base * 2 ** (attempt - 1)))]."""
    ceiling = max(floor, min(cap, base * (2 ** max(attempt - 1, 0))))
    return floor + rand() * (ceiling - floor)
