"""Ports for servers the tests and the benchmark start themselves, without the port race.

Picking a port by binding port 0 and closing the socket is a race: the kernel hands out the
local end of every outgoing connection (Postgres, Redis, gRPC clients) from the same
ephemeral range, so the port can be taken before the server binds it. Servers we run
in-process bind port 0 themselves. Servers that need a port chosen in advance (Redis and
Postgres, a wallet restarted on the port its clients know, a webhook target the simulator
must know) lease one here instead:

- from a range below the kernel's ephemeral range (`ip_local_port_range`), which outgoing
  connections never use;
- under an exclusive `flock` on a per-port lock file, held until this process exits, so two
  test runs or benchmarks on one machine never share a port;
- skipping any port something else already listens on (EADDRINUSE), up to a bound.

Leases are never returned within a process: a port a killed server held is then never handed
to the next scenario while its old connections linger.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

# Where the ephemeral range starts when /proc does not say (Linux's default).
EPHEMERAL_LOW_DEFAULT = 32768
# Leases come from this many ports just below the ephemeral range: far more than one run
# uses (a few dozen), so concurrent runs rarely meet.
LEASE_RANGE_SIZE = 8000
# Ports below this are well-known or registered to common servers (5432, 6379, 8080, ...).
LEASE_RANGE_FLOOR = 10_000
# Candidates tried before giving up: enough to step over every lease of several concurrent
# runs and the odd foreign listener.
LEASE_ATTEMPTS_MAX = 200

_held: dict[int, int] = {}  # port -> lock file descriptor, kept open until exit


class PortLeaseError(RuntimeError):
    """No port could be leased: the range is exhausted or not available on this machine."""


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return EPHEMERAL_LOW_DEFAULT, 60999


def lease_range() -> range:
    low, _high = ephemeral_range()
    start = max(LEASE_RANGE_FLOOR, low - LEASE_RANGE_SIZE)
    if low - start < 100:
        raise PortLeaseError(
            f"the ephemeral port range starts at {low}: no room below it for leased ports; "
            "raise net.ipv4.ip_local_port_range's low end (32768 is Linux's default)")
    return range(start, low)


def _lock_dir() -> Path:
    folder = Path(tempfile.gettempdir()) / "wallet-platform-ports"
    folder.mkdir(mode=0o777, exist_ok=True)
    return folder


def _try_lock(port: int) -> int | None:
    fd = os.open(_lock_dir() / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _bindable(port: int, host: str) -> bool:
    """True when a server could bind the port now. The servers set SO_REUSEADDR, so a
    connection of an earlier run lingering in TIME_WAIT does not stop them either."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def lease_port(host: str = "127.0.0.1") -> int:
    """A port nothing else listens on, reserved for this process until it exits."""
    candidates = lease_range()
    rng = random.SystemRandom()  # independent of any seed a test run sets
    for _ in range(LEASE_ATTEMPTS_MAX):
        port = rng.choice(candidates)
        if port in _held:
            continue
        fd = _try_lock(port)
        if fd is None:
            continue  # another run holds it
        if not _bindable(port, host):
            os.close(fd)  # a foreign listener: leave it the port
            continue
        _held[port] = fd
        return port
    raise PortLeaseError(f"no free port in {candidates.start}-{candidates.stop - 1} after "
                         f"{LEASE_ATTEMPTS_MAX} tries")
