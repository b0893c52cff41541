"""The channel simulator: a small threaded HTTP server that answers like the six marketplaces.

A development tool, not part of the product (it is not in the Docker image): `./dev up` runs it
(`python -m devtools.simulator --port P`), `seed_demo` points one channel of each kind at it, the
tests and `bench_propagation` start it in-process:

    from devtools.simulator import Simulator
    with Simulator(seed=7) as sim:          # a free port; sim.url, sim.store_url("my-shop")
        ...

`core` holds the per-store state, faults, the marketplace registry, shared helpers and order
sending; `server` the HTTP server, fault injection, request routing and the control endpoints
(`/_sim/...`). Each marketplace it imitates is one module (`shopify`, `woocommerce`,
`bigcommerce`, `ebay`, `amazon`, `webhook`) holding its endpoints, formats and order webhooks,
registered with `core.register` when imported here. Imitating another marketplace means adding
one module and importing it below.
"""

from devtools.simulator import amazon, bigcommerce, ebay, shopify, webhook, woocommerce  # noqa: F401 - register
from devtools.simulator.core import (
    MARKETPLACES,
    Faults,
    Marketplace,
    Route,
    SimulatorState,
    Store,
    faults_set,
    order_send,
    register,
)
from devtools.simulator.server import Handler, Simulator

__all__ = ["MARKETPLACES", "Faults", "Handler", "Marketplace", "Route", "Simulator", "SimulatorState", "Store",
           "faults_set", "order_send", "register"]
