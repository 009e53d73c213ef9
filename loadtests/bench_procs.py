"""Processes of the benchmark: the wallet servers it starts and its pool of load processes.

`Fleet` starts `python -m wallet_core serve` subprocesses (and the baseline wallet,
`python -m loadtests.baseline_wallet`), each in its own session (so a
Ctrl-C in the terminal reaches only the benchmark, which then stops them in order), reads
their RSS and CPU time from /proc, and stops exactly the processes it started: SIGTERM,
a bounded wait, then SIGKILL. `LoadPool` keeps a few load processes alive for the whole run
so that every row costs no process start-up, and starts them all on one shared instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtests import bench_load
from loadtests.bench_load import LoadSpec, WindowResult

# What Fleet starts: the wallet by default; the listen address goes in `listen_env`.
WALLET_ARGV = ("-m", "wallet_core", "serve")
WALLET_LISTEN_ENV = "WALLET_LISTEN_ADDR"
# A wallet server must answer its health check within this long after it was started.
SERVER_START_TIMEOUT_S = 30.0
# SIGTERM first (the server drains in-flight calls, bounded by its own grace setting),
# SIGKILL after this long.
SERVER_STOP_TIMEOUT_S = 8.0
SERVER_SHUTDOWN_GRACE_MS = 2000
# Load processes: how long one may take to get ready (connect) or to stop.
WORKER_READY_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 5.0
# A fixed-count job (setting up players) is bounded too; more means something is wrong.
FIXED_COUNT_JOB_TIMEOUT_S = 300.0
# The load processes start together this long after the last one said it was ready.
START_LEAD_S = 0.1
_LOG_TAIL_BYTES = 4000
_POLL_SLICE_S = 0.25


class BenchError(Exception):
    """An operating failure of the benchmark (a server or load process failed)."""



@dataclass(slots=True)
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kib(self) -> int:
        """VmRSS from /proc/<pid>/status (kB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise BenchError(f"{self.name}: no VmRSS in /proc/{self.pid}/status")

    def cpu_s(self) -> float:
        return bench_load.proc_cpu_s(self.pid)

    def listening(self) -> bool:
        """Does this process own a listening TCP socket on its port? (/proc, no tools)."""
        inodes: set[str] = set()
        with contextlib.suppress(FileNotFoundError, PermissionError):
            for fd in os.listdir(f"/proc/{self.pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
        port_hex = f"{self.port:04X}"
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError):
                for line in Path(table).read_text().splitlines()[1:]:
                    cols = line.split()
                    local, state, inode = cols[1], cols[3], cols[9]
                    if state == "0A" and local.endswith(":" + port_hex) and inode in inodes:
                        return True
        return False

    def log_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-_LOG_TAIL_BYTES:].decode(errors="replace")


@dataclass
class Fleet:
    """The servers of one benchmark run (wallets and the baseline); `stop_all` ends every one
    of them."""

    workdir: Path
    base_env: dict[str, str]
    servers: list[Server] = field(default_factory=list)

    def start(self, name: str, port: int, extra_env: dict[str, str], *,
              argv: tuple[str, ...] = WALLET_ARGV,
              listen_env: str = WALLET_LISTEN_ENV) -> Server:
        env = {**self.base_env, **extra_env, listen_env: f"127.0.0.1:{port}"}
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, *argv], env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        server = Server(name, proc, port, log_path)
        self.servers.append(server)
        return server

    async def wait_serving(self, server: Server, *, check_health: bool = True) -> None:
        """Until the server listens on its port and (unless sharing it) answers SERVING."""
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not server.alive():
                raise BenchError(f"{server.name} exited with {server.proc.returncode}:\n"
                                 f"{server.log_tail()}")
            if server.listening() and (not check_health or await _serving(server.port)):
                return
            await asyncio.sleep(0.1)
        raise BenchError(f"{server.name} not serving after {SERVER_START_TIMEOUT_S:.0f} s:\n"
                         f"{server.log_tail()}")

    def stop(self, server: Server) -> None:
        if server.alive():
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(SERVER_STOP_TIMEOUT_S)
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        # SIGTERM to all first so they drain in parallel, then wait for each.
        for server in self.servers:
            if server.alive():
                server.proc.send_signal(signal.SIGTERM)
        for server in list(self.servers):
            self.stop(server)


async def _serving(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class _Worker:
    proc: BaseProcess
    conn: Connection


@dataclass
class LoadPool:
    """Load processes that live for the whole run; `run` drives some of them through one
    job and merges their results."""

    size: int
    workers: list[_Worker] = field(default_factory=list)

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        for i in range(self.size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=bench_load.worker_main, args=(child, i),
                               name=f"bench-load-{i}", daemon=True)
            proc.start()
            child.close()
            self.workers.append(_Worker(proc, parent))

    async def run(self, spec: LoadSpec, procs: int | None = None, *,
                  on_start: Callable[[float], object] | None = None,
                  ) -> tuple[WindowResult, float]:
        """Run `spec` on `procs` load processes (all by default); returns the merged result
        and the wall-clock (epoch) instant its measured window began. `on_start` is told the
        shared start instant (time.monotonic()) as soon as it is fixed."""
        chosen = self.workers[: procs or self.size]
        for w in chosen:
            w.conn.send((spec, len(chosen)))
        for w in chosen:
            await _expect(w, "ready", WORKER_READY_TIMEOUT_S)
        start_at = time.monotonic() + START_LEAD_S
        window_epoch_s = time.time() + (start_at + spec.warmup_s - time.monotonic())
        for w in chosen:
            w.conn.send(("start", start_at))
        if on_start is not None:
            on_start(start_at)
        budget_s = (FIXED_COUNT_JOB_TIMEOUT_S if spec.fixed_count else
                    spec.warmup_s + spec.duration_s + bench_load.CALL_TIMEOUT_S + 15)
        merged = WindowResult()
        for w in chosen:
            result = await _expect(w, "done", budget_s)
            assert isinstance(result, WindowResult)
            merged.merge(result)
        return merged, window_epoch_s

    def cpu_s(self) -> float:
        return sum(bench_load.proc_cpu_s(w.proc.pid or 0) for w in self.workers)

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(OSError, BrokenPipeError):
                w.conn.send(None)
        for w in self.workers:
            w.proc.join(WORKER_STOP_TIMEOUT_S)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(WORKER_STOP_TIMEOUT_S)
            w.conn.close()
        self.workers.clear()


async def _expect(w: _Worker, what: str, timeout_s: float) -> object:
    # Short polls: a Ctrl-C must not wait for a thread blocked on a long poll.
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(w.conn.poll, _POLL_SLICE_S):
        if time.monotonic() > deadline:
            raise BenchError(f"{w.proc.name}: no '{what}' within {timeout_s:.0f} s")
        if not w.proc.is_alive():
            raise BenchError(f"{w.proc.name} died (exit code {w.proc.exitcode})")
    try:
        message, payload = w.conn.recv()
    except (EOFError, OSError) as exc:
        raise BenchError(f"{w.proc.name} died (exit code {w.proc.exitcode})") from exc
    if message == "failed":
        raise BenchError(f"{w.proc.name} failed: {payload}")
    if message != what:
        raise BenchError(f"{w.proc.name}: expected '{what}', got '{message}'")
    return payload
