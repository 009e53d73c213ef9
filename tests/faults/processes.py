"""Processes the fault scenarios start, kill and restart: the wallet and the bridge as real
subprocesses (so SIGKILL means SIGKILL), and PRIVATE Redis and Postgres servers on leased ports (loadtests/ports.py).

Every process runs in its own session (process group), so a kill reaches its children too.
Every wait is bounded. `Reaper` remembers everything started and stops it in a `finally`,
whatever the test did; the shared servers on 5432/6379 are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from glob import glob
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtests.ports import lease_port

# A loaded 2-core machine can take several seconds to import grpc/asyncpg and start serving.
PROCESS_READY_TIMEOUT_S = 45.0
# SIGTERM first where a graceful stop is wanted; after this, SIGKILL.
PROCESS_STOP_TIMEOUT_S = 10.0
PG_CTL_TIMEOUT_S = 60


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Proc:
    """One subprocess in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str],
                 log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert not self.alive(), f"{self.name} already running"
        log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        finally:
            log.close()
        self.starts += 1

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def _signal_group(self, sig: int) -> None:
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group and reap it."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(PROCESS_STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the bound."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.popen.wait(PROCESS_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def describe_exit(self) -> str:
        code = self.popen.poll() if self.popen else None
        return f"{self.name} exited with {code}; log tail:\n{log_tail(self.log_path)}"


class Reaper:
    """Everything a scenario started, stopped in reverse order on the way out."""

    def __init__(self) -> None:
        self._cleanups: list[Callable[[], None]] = []

    def add(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    def close(self) -> None:
        errors: list[BaseException] = []
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except Exception as exc:  # keep cleaning up; report the first failure afterwards
                errors.append(exc)
        self._cleanups.clear()
        if errors:
            raise errors[0]


# -- the wallet -------------------------------------------------------------------------------


async def wait_serving(port: int, proc: Proc | None = None,
                       timeout_s: float = PROCESS_READY_TIMEOUT_S) -> None:
    """Until the wallet's gRPC health says SERVING; fails early if the process died."""
    started = time.monotonic()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and not proc.alive():
                raise AssertionError(proc.describe_exit())
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() - started > timeout_s:
                raise AssertionError(f"wallet on port {port} not serving after {timeout_s}s; "
                                     + (proc.describe_exit() if proc else ""))
            await asyncio.sleep(0.1)


def wallet_proc(name: str, *, env: Mapping[str, str], port: int, log_dir: Path,
                **overrides: str) -> Proc:
    full = {**os.environ, **env, "WALLET_LISTEN_ADDR": f"127.0.0.1:{port}", **overrides}
    return Proc(name, [sys.executable, "-m", "wallet_core", "serve"], full,
                log_dir / f"{name}.log")


async def start_wallet(proc: Proc, port: int) -> None:
    proc.start()
    await wait_serving(port, proc)


# -- private Redis ----------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own on a free port: no persistence, stopped and started at will."""

    def __init__(self, log_dir: Path) -> None:
        self.port = lease_port()
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = Proc("redis", [binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--daemonize", "no"],
                         os.environ, log_dir / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc.start()
        started = time.monotonic()
        while True:
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if not self.proc.alive() or time.monotonic() - started > 20:
                    raise AssertionError(self.proc.describe_exit()) from None
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        self.proc.kill()


# -- private Postgres -------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit()
                        else 0)
    assert candidates, f"no PostgreSQL {name} found (apt-get install postgresql)"
    return candidates[-1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    # A zombie (its parent, pg_ctl's shell, is gone and init reaps it later) is dead.
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


class PrivatePostgres:
    """A throwaway cluster (initdb into a temp dir, pg_ctl on a free port), so a scenario may
    stop and start it; the shared server is never restarted. `options` are more `-c`
    settings; a standby is made with `basebackup_from` instead of `init`."""

    def __init__(self, options: Sequence[str] = ()) -> None:
        self.options = list(options)
        self.port = lease_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wallet-faults-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.pg_ctl = _pg_bin("pg_ctl")
        self._as_pg: list[str] = []
        if os.geteuid() == 0:  # Postgres refuses to run as root
            runuser = shutil.which("runuser")
            assert runuser, "running as root needs runuser to start Postgres as postgres"
            self._as_pg = [runuser, "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        proc = subprocess.run([*self._as_pg, *argv], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=PG_CTL_TIMEOUT_S + 30)
        assert proc.returncode == 0, (f"{argv[0]} failed: {proc.stdout}{proc.stderr}\n"
                                      f"{log_tail(self.log)}")

    def init(self) -> None:
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")

    def start(self) -> None:
        # fsync=off only spares this small disk: an immediate stop is not an OS crash, so the
        # page cache keeps every commit; what the scenario tests is the wallet's side.
        options = " ".join([f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                            "-c fsync=off -c max_connections=60",
                            *(f"-c {o}" for o in self.options)])
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", str(PG_CTL_TIMEOUT_S), "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w",
                  "-t", str(PG_CTL_TIMEOUT_S), "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    # -- replication (the failover checks, tests/infra) ------------------------------------

    def basebackup_from(self, primary: PrivatePostgres, *, application_name: str) -> None:
        """This cluster as a streaming standby of `primary` (pg_basebackup -R), known to it
        as `application_name` (what synchronous_standby_names names)."""
        self._run(_pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                  "-U", "postgres", "-D", str(self.data), "-R", "-X", "stream", "--no-sync",
                  "--checkpoint=fast")
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            # The later line wins: the same connection, with the name the primary waits for.
            conf.write(f"primary_conninfo = 'host=127.0.0.1 port={primary.port} "
                       f"user=postgres application_name={application_name}'\n")

    def promote(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-w", "-t", str(PG_CTL_TIMEOUT_S),
                  "promote")

    def crash(self) -> None:
        """SIGKILL the postmaster and every process it started at once, as a machine that
        dies would: no backend gets to finish what it was doing."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                                  timeout=10).stdout.split()
        for victim in [pid, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + PROCESS_STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (self.data / "postmaster.pid").unlink(missing_ok=True)

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
