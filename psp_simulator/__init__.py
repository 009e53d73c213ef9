"""PSP simulator: our own server speaking the subset of Stripe, Adyen and NOWPayments the
bridge uses, sending correctly signed webhooks, with knobs for latency, errors, downtime and
duplicated, reordered, delayed or dropped webhooks (docs/ARCHITECTURE.md, webhooks). The
demo, the tests and the load tests use it. A development package: not in the wheel nor in
the production image (deploy/Dockerfile's dev target carries it).

`config.load(env)` reads the settings; `app.running(settings)` serves in-process (yielding
the bound port); `app.run(settings)` serves until SIGTERM for the CLI. Signing reuses the
adapters' helpers in `gateway_bridge.psp`, so simulator and bridge can't drift apart.
"""

from psp_simulator.app import run, running
from psp_simulator.config import Knobs, SimSettings, load

__all__ = ["Knobs", "SimSettings", "load", "run", "running"]
