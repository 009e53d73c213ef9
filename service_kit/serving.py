"""Run a service until SIGTERM or SIGINT, then stop it gracefully: both services' `serve`.

The service is an async context manager that starts everything on entry and drains on exit
(health NOT_SERVING, stop accepting, in-flight work gets the grace period, pools close).
The signal handlers go in before it starts, so a signal that arrives during start-up stops
the service as soon as it is up rather than killing it half-built; a second signal during
the drain changes nothing (the drain has its own bound, the grace period).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

# What orchestrators send to stop a container (SIGTERM) and what a terminal sends (SIGINT).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Run = TypeVar("Run")


async def serve_until_signalled(service: AbstractAsyncContextManager[Run], *, name: str,
                                log: logging.Logger, grace_ms: int,
                                details: Callable[[Run], Mapping[str, object]]) -> None:
    """Enter `service`, log "<name> serving" with `details(run)`, wait for a stop signal,
    log "shutting down" (with the grace period) and leave it; "stopped" once it has."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The handlers stay until the loop closes: a repeated signal during the last clean-up
    # must not turn a clean exit (0) into a killed process.
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    async with service as run:
        log.info(f"{name} serving", extra=dict(details(run)))
        await stop.wait()
        log.info("shutting down", extra={"grace_ms": grace_ms})
    log.info("stopped")
