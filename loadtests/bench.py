"""`python -m loadtests.bench`: the wallet's benchmark, one Markdown table from one run.

It starts everything it measures: a fresh bench database (dropped and re-created, migrated
with `wallet-core migrate`), its own Redis database index (flushed), wallet servers as
subprocesses (group commit on; group commit off; two processes sharing one port), the
baseline wallet (`loadtests/baseline_wallet.py`, a textbook wallet speaking the same gRPC
service, its own schema), and load processes that keep a fixed number of grpc.aio calls in
flight on uvloop, or start calls at a fixed rate, for a fixed time. The wallet's players are
opened and funded through the API, the baseline's inserted by SQL, before anything is
measured.

All rows are measured in rounds: every round runs every row once, so noise from other work
on this shared machine hits all rows alike, and ratios are taken inside a round. The table
shows medians over the rounds with the lowest and highest in brackets. Rows (issues 4, 14):
1 empty-RPC ceiling; 2 Bet throughput, p50/p99; 2b p99 at 70% of saturation (open loop);
2c Bet at a fixed rate of 50% of the baseline's Bet saturation (open loop); 2d one call at a
time; 3 group commit off; 4 one hot player; 5 replays; 6 ExecuteBatch(100); 7 raw Postgres
ceiling, one operation per call; 8 server RSS; 9 two server processes on one port vs one;
10 CPU per Bet. Rows B1-B5 measure the baseline the same way, each right before or after
its wallet row (who goes first alternates by round), and every headline row states its
ratio to the baseline in that round. CPU is read at the edges of each row's measured window,
warm-up and drain left out. `--soak SECONDS` runs steady Bet load instead and reports RSS
growth.

Every process it starts is stopped on the way out, also on Ctrl-C and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

import asyncpg
import grpc
import orjson
import redis.asyncio as aioredis
import uvloop
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from loadtests import baseline_wallet, bench_pg, bench_profile
from loadtests import bench_report as rep
from loadtests.bench_load import (
    CURRENCY,
    DEPOSIT_MINOR,
    HOT_DEPOSIT_MINOR,
    HOT_PLAYER,
    Kind,
    LoadSpec,
    WindowResult,
    player_id,
    proc_cpu_s,
    sleep_until,
)
from loadtests.bench_procs import BenchError, Fleet, LoadPool, Server
from loadtests.ports import lease_port

# Targets of issue 4 (ratios to the ceilings are the headline).
TARGET_BET_VS_EMPTY_MIN = 0.6
TARGET_P99_AT_70_MS_MAX = 15.0
TARGET_GROUP_COMMIT_GAIN_MIN = 1.5
TARGET_HOT_VS_RANDOM_MIN = 0.5
TARGET_REPLAY_VS_EMPTY_MIN = 0.85
TARGET_BATCH_VS_PG_MIN = 5.0
TARGET_SOAK_GROWTH_PCT_MAX = 10.0
# Targets of issue 14: the wallet against the baseline, as ratios taken inside each round.
TARGET_BET_VS_BASELINE_MIN = 2.5
TARGET_BET_P99_VS_BASELINE_MAX = 0.5
TARGET_HOT_VS_BASELINE_MIN = 3.0
TARGET_LIMITED_VS_BET_MIN = 0.9  # Bet with every limit set vs row 2 (issue 17)
TARGET_REPLAY_VS_BASELINE_MIN = 1.5
TARGET_FIXED_RATE_VS_BASELINE_MAX = 1.0   # p50 and p99 alike
TARGET_CPU_PER_BET_VS_BASELINE_MAX = 0.5
TARGET_BATCH_OPS_MIN = 30_000
OPEN_LOOP_FRACTION = 0.7
# Row 2c: both servers at this fraction of the baseline's Bet throughput (row B2, same round).
FIXED_RATE_FRACTION = 0.5
BASELINE_ARGV = ("-m", "loadtests.baseline_wallet")
# Postgres backends whose CPU the bench reads: the wallets', the baseline's, row 7's.
BACKEND_APPS = (bench_pg.WALLET_APP, baseline_wallet.APPLICATION_NAME, bench_pg.RAW_APP)
MULTI_CONNECTIONS_MIN = 4
SOAK_SAMPLE_INTERVAL_S = 10.0
# The soak's RSS growth is measured from the first sample after this much load, when
# buffers and caches have reached their working size.
SOAK_WARMUP_S = 10.0
SOAK_MAX_S = 3600
MIGRATE_TIMEOUT_S = 120.0
REDIS_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 10.0
# What wallet_core.idempotency_cache logs when it gives up on Redis for a while.
REDIS_SKIPPED_LOG = "failed; serving from Postgres"
SCOPES = ["game", "payments", "read", "bonus", "limits"]
ROW_LABELS = {"empty": "row 1 (empty RPC)", "bet": "row 2 (Bet)",
              "bet_at_70": "row 2b (Bet at 70%)",
              "bet_at_half": "row 2c (Bet at 50% of B2)", "single": "row 2d (one at a time)",
              "bet_gc_off": "row 3 (group commit off)", "hot": "row 4 (hot player)",
              "replay": "row 5 (replays)", "batch": "row 6 (ExecuteBatch, per op)",
              "pg_raw": "row 7 (raw Postgres)", "multi": "row 9 (two processes)",
              "base_empty": "row B1 (baseline empty RPC)", "base_bet": "row B2 (baseline Bet)",
              "base_bet_at_half": "row B2c (baseline at 50% of B2)",
              "base_single": "row B2d (baseline one at a time)",
              "base_hot": "row B4 (baseline hot player)",
              "base_replay": "row B5 (baseline replays)", "soak": "soak (Bet)"}


@dataclass(frozen=True, slots=True)
class Options:
    rounds: int
    seconds: float
    warmup_s: float
    players: int
    concurrency: int
    load_procs: int
    channels: int
    batch_size: int
    batch_concurrency: int
    pg_connections: int
    replay_keys: int
    bench_db: str
    redis_db: int
    soak_s: int
    markdown_out: Path | None
    server_env: dict[str, str]
    py_spy_out: Path | None
    command: str


@dataclass(slots=True)
class Sample:
    """One row measured in one round."""

    result: WindowResult
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        return self.result.ops / self.result.window_s if self.result.window_s else 0.0

    @property
    def calls_per_s(self) -> float:
        return self.result.calls / self.result.window_s if self.result.window_s else 0.0


@dataclass(frozen=True, slots=True)
class System:
    """What a row drives: a gRPC target, the server processes behind it and the
    application_name of their Postgres backends (whose CPU counts as theirs)."""

    target: str
    servers: tuple[Server, ...]
    app: str


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds so far: of each server (by pid), of each Postgres backend serving our
    servers or row 7 (by pid, with its application), of the load processes, and of the whole
    machine (from /proc/stat)."""

    at: float
    servers_s: dict[int, float]
    client_s: float
    backends_s: dict[int, tuple[str, float]]
    machine_busy_s: float

    def cost(self, later: CpuSnapshot, system: System) -> dict[str, float]:
        """CPU spent between two snapshots in seconds: by the row's servers and their Postgres
        backends, by the load processes, and by everything else; 'wall_s' the time between.
        A backend that appeared in between counts from zero (it was opened in between)."""
        def pg(app: str | None) -> float:
            return sum(cpu - self.backends_s.get(pid, (name, 0.0))[1]
                       for pid, (name, cpu) in later.backends_s.items()
                       if app is None or name == app)

        def servers(pids: set[int] | None) -> float:
            return sum(cpu - self.servers_s.get(pid, 0.0) for pid, cpu in later.servers_s.items()
                       if pids is None or pid in pids)

        client = later.client_s - self.client_s
        busy = later.machine_busy_s - self.machine_busy_s
        return {"server_cpu_s": servers({s.pid for s in system.servers}),
                "pg_cpu_s": pg(system.app), "client_cpu_s": client,
                "others_cpu_s": max(0.0, busy - servers(None) - pg(None) - client),
                "wall_s": later.at - self.at}


def _machine_busy_s() -> float:
    """Busy CPU seconds of all cores since boot: everything but idle and iowait."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Bench:
    """One run: its servers, its rows measured round by round, and the table they make."""

    def __init__(self, opts: Options, fleet: Fleet, pool: LoadPool, *, token: str,
                 bench_db_url: str, redis_url: str) -> None:
        self.o = opts
        self.redis_url = redis_url
        self.fleet = fleet
        self.pool = pool
        self.token = token
        self.bench_db_url = bench_db_url
        self.run_tag = secrets.token_hex(3)
        self.samples: dict[str, list[Sample]] = {}
        self.notes: list[str] = []
        self.batch_unavailable = ""
        self.reuseport = ""
        self.main: Server | None = None
        self.gc_off: Server | None = None
        self.baseline: Server | None = None
        self.multi: list[Server] = []
        self.multi_target = ""
        self.rss_kib: dict[str, float] = {}
        self.soak_samples: list[tuple[float, int]] = []
        self.admin: asyncpg.Connection | None = None

    # -- servers -------------------------------------------------------------------------

    def _gc_env(self, on: bool) -> dict[str, str]:
        return {"WALLET_GROUP_COMMIT": "true" if on else "false"}

    def _shared_env(self) -> dict[str, str]:
        """Two processes on one port: the wallet allows it only when asked to."""
        return {**self._gc_env(True), "WALLET_SO_REUSEPORT": "true"}

    async def start_servers(self, *, soak: bool) -> None:
        self.main = self.fleet.start("wallet-gc-on", lease_port(), self._gc_env(True))
        await self.fleet.wait_serving(self.main)
        self.rss_kib["start"] = self.main.rss_kib()
        log(f"server {self.main.name} pid {self.main.pid} on :{self.main.port}, "
            f"RSS {self.rss_kib['start'] / 1024:.1f} MiB")
        if soak:
            return
        self.gc_off = self.fleet.start("wallet-gc-off", lease_port(), self._gc_env(False))
        self.baseline = self.fleet.start("baseline", lease_port(),
                                         {"BASELINE_TOKEN": self.token}, argv=BASELINE_ARGV,
                                         listen_env="BASELINE_LISTEN_ADDR")
        shared_port = lease_port()
        self.multi = [self.fleet.start("wallet-multi-1", shared_port, self._shared_env())]
        await asyncio.gather(self.fleet.wait_serving(self.gc_off),
                             self.fleet.wait_serving(self.baseline),
                             self.fleet.wait_serving(self.multi[0]))
        log(f"baseline pid {self.baseline.pid} on :{self.baseline.port}")
        await self._start_second_on_shared_port(shared_port)

    async def _start_second_on_shared_port(self, port: int) -> None:
        """Two processes on one port (SO_REUSEPORT). If the second cannot bind, say so and
        measure two ports behind client-side round robin instead (the same split of work)."""
        second = self.fleet.start("wallet-multi-2", port, self._shared_env())
        try:
            await self.fleet.wait_serving(second, check_health=False)
        except BenchError as exc:
            tail = exc.args[0].strip().splitlines()[-1:] if exc.args else []
            self.reuseport = ("no: the second process could not bind the port ("
                              f"{' '.join(tail)[:160]})")
            self.fleet.stop(second)
            second = self.fleet.start("wallet-multi-2", lease_port(), self._gc_env(True))
            await self.fleet.wait_serving(second)
            self.multi.append(second)
            self.multi_target = (f"ipv4:127.0.0.1:{self.multi[0].port},"
                                 f"127.0.0.1:{second.port}")
            return
        both = all(s.listening() for s in (self.multi[0], second))
        self.reuseport = "yes: both processes listen on the port" if both else "unclear"
        self.multi.append(second)
        self.multi_target = f"127.0.0.1:{port}"

    @property
    def wallet(self) -> System:
        """The main wallet server (group commit on)."""
        assert self.main is not None
        return System(f"127.0.0.1:{self.main.port}", (self.main,), bench_pg.WALLET_APP)

    @property
    def base(self) -> System:
        assert self.baseline is not None
        return System(f"127.0.0.1:{self.baseline.port}", (self.baseline,),
                      baseline_wallet.APPLICATION_NAME)

    # -- jobs ----------------------------------------------------------------------------

    def spec(self, kind: Kind, target: str, label: str, **kw: object) -> LoadSpec:
        base = LoadSpec(kind=kind, tag=f"{self.run_tag}-{label}", targets=(target,),
                        token=self.token, concurrency=self.o.concurrency,
                        warmup_s=self.o.warmup_s, duration_s=self.o.seconds,
                        channels=self.o.channels, players=self.o.players,
                        replay_count=self.o.replay_keys, batch_size=self.o.batch_size)
        return replace(base, **kw)  # type: ignore[arg-type]

    async def cpu_snapshot(self) -> CpuSnapshot:
        assert self.admin is not None
        apps = await bench_pg.backend_pids(self.admin, BACKEND_APPS)
        return CpuSnapshot(at=time.monotonic(),
                           servers_s={s.pid: s.cpu_s() for s in self.fleet.servers},
                           client_s=self.pool.cpu_s(),
                           backends_s={pid: (app, proc_cpu_s(pid)) for pid, app in apps.items()},
                           machine_busy_s=_machine_busy_s())

    async def measure(self, row: str, spec: LoadSpec, system: System, *,
                      procs: int | None = None) -> Sample:
        """One row. CPU is read when its measured window opens and when it closes, so CPU per
        operation is the window's CPU over the window's operations (no warm-up, no drain)."""
        edges: list[CpuSnapshot] = []
        readers: list[asyncio.Task[None]] = []

        async def read_edges(start_at: float) -> None:
            opens = start_at + spec.warmup_s
            await sleep_until(opens)
            edges.append(await self.cpu_snapshot())
            await sleep_until(opens + spec.duration_s)
            edges.append(await self.cpu_snapshot())

        def started(start_at: float) -> None:
            readers.append(asyncio.create_task(read_edges(start_at)))

        try:
            result, window_epoch_s = await self.pool.run(spec, procs, on_start=started)
            await asyncio.gather(*readers)
        finally:
            for task in readers:
                task.cancel()
        sample = Sample(result, {"window_epoch_s": window_epoch_s,
                                 **edges[0].cost(edges[1], system)})
        self.samples.setdefault(row, []).append(sample)
        p99 = result.percentile_ms(0.99)
        log(f"  {row:<16} {sample.ops_per_s:>9,.0f} ops/s  p99 {p99:6.1f} ms"
            + (f"  errors {dict(result.errors)}" if result.errors else ""))
        return sample

    async def setup_players(self) -> None:
        """Open and fund every player (and the hot one) through the API; by ExecuteBatch
        when the server has it, which is several times faster."""
        began = time.monotonic()
        wallets = self.o.players + 1
        if self.batch_unavailable:
            spec = self.spec(Kind.SETUP, self.wallet.target, "setup", count=wallets,
                             warmup_s=0.0)
        else:
            spec = self.spec(Kind.SETUP_BATCH, self.wallet.target, "setup",
                             count=-(-wallets // self.o.batch_size), warmup_s=0.0,
                             concurrency=self.o.batch_concurrency)
        result, _ = await self.pool.run(spec)
        if result.errors or result.ops != wallets:
            raise BenchError(f"setting up players failed: {result.ops:,} of {wallets:,} "
                             f"wallets; errors {dict(result.errors)}")
        log(f"opened and funded {self.o.players:,} players + {HOT_PLAYER} in "
            f"{time.monotonic() - began:.1f} s ({'unary' if self.batch_unavailable else 'batch'})")
        began = time.monotonic()
        spec = self.spec(Kind.SETUP_LIMITS, self.wallet.target, "setup-limits",
                         count=self.o.players, warmup_s=0.0)
        result, _ = await self.pool.run(spec)
        if result.errors or result.ops != self.o.players:
            raise BenchError(f"setting up limited players failed: {result.ops:,} of "
                             f"{self.o.players:,}; errors {dict(result.errors)}")
        log(f"opened, funded and limited {self.o.players:,} more players in "
            f"{time.monotonic() - began:.1f} s")

    async def fund_baseline(self) -> None:
        """The baseline's wallets: the same players and amounts, inserted by SQL in bulk."""
        wallets = [(player_id(i), CURRENCY, DEPOSIT_MINOR) for i in range(self.o.players)]
        wallets.append((HOT_PLAYER, CURRENCY, HOT_DEPOSIT_MINOR))
        await bench_pg.fund_baseline(self.bench_db_url, wallets)

    async def seed_replays(self, system: System, label: str) -> None:
        """Record the replay set, then send it once more: a replay whose first answer did
        not reach Redis (a Redis timeout under load) is cached by this second pass."""
        for what in ("seeding", "warming"):
            spec = self.spec(Kind.SEED_REPLAY, system.target, label,
                             count=self.o.replay_keys, warmup_s=0.0)
            result, _ = await self.pool.run(spec)
            if result.errors:
                raise BenchError(f"{what} the replay set of {system.servers[0].name} failed: "
                                 f"{dict(result.errors)}")
        cached = await _redis_count(self.redis_url, f"*:{spec.tag}-replay-*")
        if cached < self.o.replay_keys:
            self.notes.append(f"replay set of {system.servers[0].name}: only {cached:,} of "
                              f"{self.o.replay_keys:,} outcomes were in Redis before the "
                              "replay rows (the others replay from Postgres)")

    async def probe_batch(self) -> None:
        """One small ExecuteBatch: UNIMPLEMENTED (or any refusal) makes row 6 'not available'."""
        md = (("authorization", f"Bearer {self.token}"),)
        probe = pb.OpenWalletRequest(player_id="bench-probe", currency="USD",
                                     idempotency_key=f"{self.run_tag}-probe")
        async with grpc.aio.insecure_channel(self.wallet.target) as channel:
            stub = pb_grpc.WalletServiceStub(channel)  # type: ignore[no-untyped-call]
            try:
                reply = await stub.ExecuteBatch(
                    pb.ExecuteBatchRequest(operations=[pb.BatchOperation(open_wallet=probe)],
                                           atomic=False),
                    metadata=md, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                self.batch_unavailable = f"{exc.code().name}: {exc.details() or ''}"[:160]
                return
            except AttributeError:  # generated code without the method
                self.batch_unavailable = "ExecuteBatch not in the generated stubs"
                return
        if len(reply.results) != 1 or reply.results[0].WhichOneof("outcome") != "open_wallet":
            self.batch_unavailable = f"unexpected answer to a one-bet batch: {reply}"[:160]

    # -- one round -----------------------------------------------------------------------

    async def one_round(self, r: int) -> None:
        o = self.o
        log(f"round {r + 1}/{o.rounds}")
        wallet = self.wallet
        await self._both(r, "empty", Kind.HEALTH, "empty")
        async def limited() -> None:
            await self.measure("bet_limited", self.spec(Kind.BET_LIMITED, wallet.target,
                                                        f"lim-{r}"), wallet)
        # Row 2e goes before row 2 in odd rounds and after it in even ones, so neither
        # always meets the machine in the state the other left it in.
        if r % 2:
            await limited()
        bet, base_bet = await self._both(r, "bet", Kind.BET_RANDOM, "bet")
        if not r % 2:
            await limited()
        await self.measure("bet_at_70", self.spec(
            Kind.BET_RANDOM, wallet.target, f"open-{r}",
            rate_per_s=max(1.0, OPEN_LOOP_FRACTION * bet.ops_per_s)), wallet)
        await self._both(r, "bet_at_half", Kind.BET_RANDOM, "half",
                         rate_per_s=max(1.0, FIXED_RATE_FRACTION * base_bet.ops_per_s))
        await self._both(r, "single", Kind.BET_RANDOM, "single", procs=1, concurrency=1)
        assert self.gc_off is not None
        gc_off = System(f"127.0.0.1:{self.gc_off.port}", (self.gc_off,), bench_pg.WALLET_APP)
        await self.measure("bet_gc_off", self.spec(Kind.BET_RANDOM, gc_off.target, f"off-{r}"),
                           gc_off)
        await self._both(r, "hot", Kind.BET_HOT, "hot")
        await self._alternate(r, lambda: self._measure_replay("replay", wallet, "seed", r),
                              lambda: self._measure_replay("base_replay", self.base, "bseed", r))
        if not self.batch_unavailable:
            await self.measure("batch", self.spec(Kind.BATCH, wallet.target, f"batch-{r}",
                                                  concurrency=o.batch_concurrency), wallet)
        await self.measure("pg_raw", self.spec(Kind.PG_RAW, "", f"pg-{r}",
                                               concurrency=o.pg_connections,
                                               database_url=self.bench_db_url),
                           System("", (), bench_pg.RAW_APP), procs=1)
        multi = System(self.multi_target, tuple(self.multi), bench_pg.WALLET_APP)
        cpu_before = [s.cpu_s() for s in self.multi]
        sample = await self.measure("multi", self.spec(Kind.BET_RANDOM, multi.target,
                                                       f"multi-{r}",
                                                       channels=self._multi_channels), multi)
        cpu = [s.cpu_s() - b for s, b in zip(self.multi, cpu_before, strict=True)]
        sample.extra["cpu_share_min"] = min(cpu) / max(sum(cpu), 1e-9)

    async def _alternate(self, r: int, wallet_row: Callable[[], Awaitable[Sample]],
                         baseline_row: Callable[[], Awaitable[Sample]]) -> tuple[Sample, Sample]:
        """The wallet's row and the baseline's, back to back; who goes first alternates by
        round, so a drift in the machine's load favours neither. (wallet, baseline)."""
        if r % 2:
            base = await baseline_row()
            return await wallet_row(), base
        first = await wallet_row()
        return first, await baseline_row()

    async def _both(self, r: int, row: str, kind: Kind, label: str, *,
                    procs: int | None = None, **kw: object) -> tuple[Sample, Sample]:
        """The same load on the wallet (row `row`) and on the baseline (`base_<row>`)."""
        def one(name: str, system: System, tag: str) -> Callable[[], Awaitable[Sample]]:
            spec = self.spec(kind, system.target, f"{tag}-{r}", **kw)
            if name == "bet" and r == 0 and self.o.py_spy_out is not None:
                return lambda: self._measure_profiled(name, spec, system)
            return lambda: self.measure(name, spec, system, procs=procs)
        return await self._alternate(r, one(row, self.wallet, label),
                                     one(f"base_{row}", self.base, f"b{label}"))

    async def _measure_replay(self, row: str, system: System, seed_label: str,
                              r: int) -> Sample:
        """Row 5 or B5: the replay set sent again; whether Postgres was touched meanwhile, and
        how many Redis failures the server logged."""
        server = system.servers[0]
        log_offset = server.log_path.stat().st_size
        sample = await self.measure(row, self.spec(Kind.BET_REPLAY, system.target, f"x{r}",
                                                   tag=f"{self.run_tag}-{seed_label}"), system)
        touched, conns = await bench_pg.connections_touched_since(
            self.bench_db_url, system.app, sample.extra["window_epoch_s"] - self.o.warmup_s)
        with server.log_path.open("rb") as f:
            f.seek(log_offset)
            logged = f.read().decode(errors="replace")
        failures = logged.count(REDIS_SKIPPED_LOG) + logged.count(
            baseline_wallet.REDIS_FAILED_LOG)
        sample.extra.update(pg_touched=touched, pg_connections=conns, redis_failures=failures)
        return sample

    async def _measure_profiled(self, row: str, spec: LoadSpec, system: System) -> Sample:
        """Row 2 of the first round under py-spy (--py-spy)."""
        out = self.o.py_spy_out
        assert out is not None
        recorder = bench_profile.start(system.servers[0].pid, spec.warmup_s + spec.duration_s,
                                       out)
        try:
            sample = await self.measure(row, spec, system)
            _, stderr = await asyncio.to_thread(recorder.communicate, timeout=30)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait()
        if recorder.returncode != 0 or not out.exists():
            self.notes.append(f"py-spy failed: {stderr.decode(errors='replace').strip()[-200:]}")
        else:
            self.notes.extend(bench_profile.summarize(out))
        return sample

    async def soak(self) -> None:
        """Steady Bet load for `soak_s`, RSS of the server sampled every 10 s."""
        assert self.main is not None
        main = self.main
        samples: list[tuple[float, int]] = []
        spec = self.spec(Kind.BET_RANDOM, self.wallet.target, "soak", warmup_s=0.0,
                         duration_s=float(self.o.soak_s))

        async def sample_rss() -> None:
            began = time.monotonic()
            while True:
                await asyncio.sleep(SOAK_SAMPLE_INTERVAL_S)
                samples.append((time.monotonic() - began, main.rss_kib()))
                log(f"  soak t={samples[-1][0]:5.0f} s  RSS {samples[-1][1] / 1024:.1f} MiB")

        sampler = asyncio.create_task(sample_rss())
        try:
            await self.measure("soak", spec, self.wallet)
        finally:
            sampler.cancel()
        samples.append((float(self.o.soak_s), main.rss_kib()))
        self.soak_samples = samples

    # -- the table -----------------------------------------------------------------------

    def _values(self, row: str, fn: Callable[[Sample], float]) -> list[float]:
        return [fn(s) for s in self.samples.get(row, [])]

    def _per_round(self, row: str, other: str, fn: Callable[[Sample], float]) -> list[float]:
        """fn(row) / fn(other), round by round (both measured in the same round)."""
        out = []
        for a, b in zip(self.samples.get(row, []), self.samples.get(other, []), strict=False):
            x, y = fn(a), fn(b)
            if y and x == x and y == y:  # skip a zero or NaN (nothing measured)
                out.append(x / y)
        return out

    def _ratios(self, row: str, ceiling: str) -> list[float]:
        return self._per_round(row, ceiling, _ops)

    def _throughput_latency(self, row: str, unit: str = "ops/s") -> str:
        tput = self._values(row, _ops)
        p50 = self._values(row, _p50)
        p99 = self._values(row, _p99)
        return (f"{rep.spread(tput, rep.count)} {unit}; p50 {rep.spread(p50, rep.ms)}, "
                f"p99 {rep.spread(p99, rep.ms)}")

    def rows(self) -> list[rep.Row]:
        o = self.o
        return [
            rep.Row("1", f"ceiling: empty unary RPC (grpc.health Check), {o.concurrency} in "
                    "flight", self._throughput_latency("empty", "RPS"), "1 (ceiling)", "—", "—",
                    vs_baseline=rep.spread(self._ratios("empty", "base_empty"), rep.times)),
            self._row_baseline("B1", "baseline: empty unary RPC, same load", "base_empty",
                               unit="RPS"),
            self._row_bet(),
            self._row_baseline("B2", f"baseline: Bet, random players, {o.concurrency} in "
                               "flight", "base_bet", of=("base_empty", "row B1")),
            self._row_limited(),
            self._row_open_loop(), *self._rows_fixed_rate(), *self._rows_single(),
            self._row_gc_off(), self._row_hot(),
            self._row_baseline("B4", "baseline: Bet, one hot player", "base_hot",
                               of=("base_bet", "row B2")),
            self._row_replay(),
            self._row_baseline("B5", "baseline: Bet replays (its own replay set, seeded the "
                               "same way)", "base_replay", of=("base_empty", "row B1")),
            self._row_batch(),
            rep.Row("7", f"raw Postgres ceiling, one op per call (CTE: guarded UPDATE + "
                    f"journal INSERT, {bench_pg.ACCOUNTS:,} rows, {o.pg_connections} "
                    "connections)", self._throughput_latency("pg_raw"), "1 (ceiling)", "—", "—"),
            self._row_rss(), self._row_multi(), self._row_cpu_per_bet(),
        ]

    def _row_baseline(self, number: str, figure: str, row: str, *, unit: str = "ops/s",
                      of: tuple[str, str] | None = None) -> rep.Row:
        ratio = "—"
        if of is not None:
            ratio = f"{rep.spread(self._ratios(row, of[0]), rep.ratio)} of {of[1]}"
        return rep.Row(number, figure, self._throughput_latency(row, unit), ratio, "—", "—",
                       vs_baseline="(the baseline)")

    def _row_bet(self) -> rep.Row:
        r = self._ratios("bet", "empty")
        tput = self._ratios("bet", "base_bet")
        p99 = self._per_round("bet", "base_bet", _p99)
        return rep.Row(
            "2", f"Bet, random players ({self.o.players:,}), {self.o.concurrency} in flight",
            self._throughput_latency("bet"), f"{rep.spread(r, rep.ratio)} of row 1",
            f"≥ {TARGET_BET_VS_EMPTY_MIN} of row 1 · ops/s ≥ {TARGET_BET_VS_BASELINE_MIN}× · "
            f"p99 ≤ {TARGET_BET_P99_VS_BASELINE_MAX}× baseline",
            " · ".join([rep.met(rep.median(r), at_least=TARGET_BET_VS_EMPTY_MIN),
                        rep.met(rep.median(tput), at_least=TARGET_BET_VS_BASELINE_MIN),
                        rep.met(rep.median(p99), at_most=TARGET_BET_P99_VS_BASELINE_MAX)]),
            vs_baseline=(f"ops/s {rep.spread(tput, rep.times)} · "
                         f"p99 {rep.spread(p99, rep.times)}"))

    def _row_limited(self) -> rep.Row:
        r = self._per_round("bet_limited", "bet", _ops)
        cpu = self._per_round("bet_limited", "bet", _system_cpu_per_op_us)
        client = self._per_round("bet_limited", "bet",
                                 lambda s: _cpu_per_op_us(s, "client_cpu_s"))
        return rep.Row("2e", f"Bet with every limit set (deposit, loss, wager × day, week, "
                       f"month), {self.o.players:,} players of their own, same load, next "
                       "to row 2 (before it in odd rounds, after it in even ones)",
                       f"{self._throughput_latency('bet_limited')}; CPU per Bet "
                       f"{self._cpu_us('bet_limited')}",
                       f"{rep.spread(r, rep.ratio)} of row 2; CPU per Bet "
                       f"{rep.spread(cpu, rep.times)} row 2 (the load generator's, the same "
                       f"work in both: {rep.spread(client, rep.times)})",
                       f"≥ {TARGET_LIMITED_VS_BET_MIN} of row 2",
                       rep.met(rep.median(r), at_least=TARGET_LIMITED_VS_BET_MIN))

    def _row_open_loop(self) -> rep.Row:
        p99 = self._values("bet_at_70", _p99)
        p50 = self._values("bet_at_70", _p50)
        rate = self._values("bet_at_70", _ops)
        return rep.Row("2b", "Bet p99 at 70% of row 2's throughput (open loop, latency from "
                       "the scheduled send)",
                       f"p99 {rep.spread(p99, rep.ms)}, p50 {rep.spread(p50, rep.ms)} at "
                       f"{rep.spread(rate, rep.count)} ops/s", "—",
                       f"≤ {TARGET_P99_AT_70_MS_MAX:.0f} ms",
                       rep.met(rep.median(p99), at_most=TARGET_P99_AT_70_MS_MAX))

    def _fixed_rate_value(self, row: str) -> str:
        p50, p99 = self._values(row, _p50), self._values(row, _p99)
        rate = self._values(row, _ops)
        return (f"p50 {rep.spread(p50, rep.ms)}, p99 {rep.spread(p99, rep.ms)} at "
                f"{rep.spread(rate, rep.count)} ops/s")

    def _rows_fixed_rate(self) -> list[rep.Row]:
        """Rows 2c and B2c: both servers at one fixed rate that the baseline can sustain."""
        p50 = self._per_round("bet_at_half", "base_bet_at_half", _p50)
        p99 = self._per_round("bet_at_half", "base_bet_at_half", _p99)
        most = TARGET_FIXED_RATE_VS_BASELINE_MAX
        return [
            rep.Row("2c", f"Bet at a fixed rate: {FIXED_RATE_FRACTION:.0%} of the baseline's "
                    "Bet throughput in the same round (row B2), random players, open loop, "
                    "latency from the scheduled send", self._fixed_rate_value("bet_at_half"),
                    "—", f"p50 ≤ {most:.1f}× · p99 ≤ {most:.1f}× baseline",
                    " · ".join([rep.met(rep.median(p50), at_most=most),
                                rep.met(rep.median(p99), at_most=most)]),
                    vs_baseline=(f"p50 {rep.spread(p50, rep.times)} · "
                                 f"p99 {rep.spread(p99, rep.times)}")),
            rep.Row("B2c", "baseline: Bet at the same fixed rate",
                    self._fixed_rate_value("base_bet_at_half"), "—", "—", "—",
                    vs_baseline="(the baseline)"),
        ]

    def _rows_single(self) -> list[rep.Row]:
        """Rows 2d and B2d: one client, one call at a time: latency with no queue at all."""
        p50 = self._per_round("single", "base_single", _p50)
        return [
            rep.Row("2d", "Bet, one client, one call at a time (closed loop, 1 in flight)",
                    self._throughput_latency("single"), "—", "comparable p50 (no target)",
                    "—", vs_baseline=f"p50 {rep.spread(p50, rep.times)}"),
            rep.Row("B2d", "baseline: Bet, one call at a time",
                    self._throughput_latency("base_single"), "—", "—", "—",
                    vs_baseline="(the baseline)"),
        ]

    def _row_gc_off(self) -> rep.Row:
        r = self._per_round("bet", "bet_gc_off", _ops)
        vs = self._ratios("bet_gc_off", "base_bet")
        return rep.Row("3", "Bet, group commit off (WALLET_GROUP_COMMIT=false), same load",
                       self._throughput_latency("bet_gc_off"),
                       f"on/off {rep.spread(r, rep.times)}",
                       f"≥ {TARGET_GROUP_COMMIT_GAIN_MIN}×",
                       rep.met(rep.median(r), at_least=TARGET_GROUP_COMMIT_GAIN_MIN),
                       vs_baseline=f"ops/s {rep.spread(vs, rep.times)} (no target)")

    def _row_hot(self) -> rep.Row:
        r = self._ratios("hot", "bet")
        vs = self._ratios("hot", "base_hot")
        return rep.Row("4", "Bet, one hot player (every bet on one wallet); every Bet of "
                       "rows 2-5 also credits the one house account `house:bench-slots`",
                       self._throughput_latency("hot"), f"{rep.spread(r, rep.ratio)} of row 2",
                       f"≥ {TARGET_HOT_VS_RANDOM_MIN} of row 2 · ≥ "
                       f"{TARGET_HOT_VS_BASELINE_MIN:.0f}× baseline",
                       " · ".join([rep.met(rep.median(r), at_least=TARGET_HOT_VS_RANDOM_MIN),
                                   rep.met(rep.median(vs), at_least=TARGET_HOT_VS_BASELINE_MIN)]),
                       vs_baseline=f"ops/s {rep.spread(vs, rep.times)}")

    def _replay_postgres(self, row: str) -> str:
        touched = self._values(row, lambda s: s.extra.get("pg_touched", 0))
        failures = sum(self._values(row, lambda s: s.extra.get("redis_failures", 0)))
        if not any(touched):
            return "Postgres untouched during the rows"
        return (f"Postgres touched by {max(touched):.0f} connection(s) after {failures:.0f} "
                "Redis failure(s)")

    def _row_replay(self) -> rep.Row:
        r = self._ratios("replay", "empty")
        vs = self._ratios("replay", "base_replay")
        return rep.Row("5", f"Bet replays: {self.o.replay_keys:,} recorded bets sent again "
                       "(same keys, same requests)",
                       f"{self._throughput_latency('replay')}; {self._replay_postgres('replay')}"
                       f" (baseline: {self._replay_postgres('base_replay')})",
                       f"{rep.spread(r, rep.ratio)} of row 1",
                       f"≥ {TARGET_REPLAY_VS_EMPTY_MIN} of row 1 · ≥ "
                       f"{TARGET_REPLAY_VS_BASELINE_MIN}× baseline",
                       " · ".join([rep.met(rep.median(r), at_least=TARGET_REPLAY_VS_EMPTY_MIN),
                                   rep.met(rep.median(vs),
                                           at_least=TARGET_REPLAY_VS_BASELINE_MIN)]),
                       vs_baseline=f"ops/s {rep.spread(vs, rep.times)}")

    def _row_batch(self) -> rep.Row:
        figure = (f"ExecuteBatch of {self.o.batch_size} bets (atomic=false), "
                  f"{self.o.batch_concurrency} calls in flight")
        target = f"≥ {TARGET_BATCH_VS_PG_MIN:.0f}× row 7 · ≥ {TARGET_BATCH_OPS_MIN:,} ops/s"
        if self.batch_unavailable:
            return rep.Row("6", figure, f"not available ({self.batch_unavailable})", "—",
                           target, "n/a")
        calls = self._values("batch", lambda s: s.calls_per_s)
        r = self._ratios("batch", "pg_raw")
        ops = rep.median(self._values("batch", _ops))
        vs = self._ratios("batch", "base_bet")
        return rep.Row("6", figure,
                       f"{self._throughput_latency('batch')} per call; "
                       f"{rep.spread(calls, rep.count)} calls/s",
                       f"{rep.spread(r, rep.times)} row 7", target,
                       " · ".join([rep.met(rep.median(r), at_least=TARGET_BATCH_VS_PG_MIN),
                                   rep.met(ops, at_least=TARGET_BATCH_OPS_MIN)]),
                       vs_baseline=f"ops/s {rep.spread(vs, rep.times)} row B2 (no target)")

    def _row_rss(self) -> rep.Row:
        start, end = self.rss_kib.get("start", 0.0), self.rss_kib.get("end", 0.0)
        growth = 100 * (end - start) / start if start else float("nan")
        return rep.Row("8", "server RSS (VmRSS) of the main server: after start-up → after "
                       "all rows", f"{start / 1024:.1f} MiB → {end / 1024:.1f} MiB "
                       f"({growth:+.0f}%)", "—",
                       f"grows < {TARGET_SOAK_GROWTH_PCT_MAX:.0f}% over a 10-minute soak",
                       "see `--soak 600`")

    @property
    def _multi_channels(self) -> int:
        # SO_REUSEPORT spreads connections, not calls: give the kernel several to spread.
        # Behind client round robin each connection already reaches both processes.
        shared_port = "," not in self.multi_target
        return max(self.o.channels, MULTI_CONNECTIONS_MIN) if shared_port else self.o.channels

    def _row_multi(self) -> rep.Row:
        r = self._ratios("multi", "bet")
        share = self._values("multi", lambda s: s.extra.get("cpu_share_min", 0.0))
        how = (f"one port, SO_REUSEPORT, {self._multi_channels} connections per load process"
               if "," not in self.multi_target
               else "SO_REUSEPORT refused, so two ports behind client round robin")
        return rep.Row("9", f"Bet on two server processes ({how}) vs one; same load",
                       f"{self._throughput_latency('multi')}; busier process did "
                       f"{100 - 100 * rep.median(share):.0f}% of the server CPU",
                       f"{rep.spread(r, rep.times)} row 2", "measured (no target)", "—")

    def _cpu_us(self, row: str) -> str:
        total = self._values(row, _system_cpu_per_op_us)
        server = rep.median(self._values(row, lambda s: _cpu_per_op_us(s, "server_cpu_s")))
        pg = rep.median(self._values(row, lambda s: _cpu_per_op_us(s, "pg_cpu_s")))
        return f"{rep.spread(total, _us)} (server {_us(server)} + Postgres {_us(pg)})"

    def _row_cpu_per_bet(self) -> rep.Row:
        vs = self._per_round("bet", "base_bet", _system_cpu_per_op_us)
        return rep.Row("10", "CPU per Bet (rows 2 and B2): the server process + its Postgres "
                       "backends, measured window only, divided by the Bets in it",
                       f"wallet {self._cpu_us('bet')}; baseline {self._cpu_us('base_bet')}",
                       "—", f"≤ {TARGET_CPU_PER_BET_VS_BASELINE_MAX}× baseline",
                       rep.met(rep.median(vs), at_most=TARGET_CPU_PER_BET_VS_BASELINE_MAX),
                       vs_baseline=rep.spread(vs, rep.times))

    def soak_rows(self) -> list[rep.Row]:
        samples = self.soak_samples
        start = self.rss_kib["start"]
        after_warmup = next((kib for t, kib in samples if t >= SOAK_WARMUP_S), samples[0][1])
        end = samples[-1][1]
        growth = 100 * (end - after_warmup) / after_warmup
        series = ", ".join(f"{kib / 1024:.0f}" for _, kib in samples)
        return [
            rep.Row("S", f"steady Bet load, random players, {self.o.concurrency} in flight, "
                    f"{self.o.soak_s} s", self._throughput_latency("soak"), "—", "—", "—"),
            rep.Row("8", f"server RSS over the soak: at {SOAK_WARMUP_S:.0f} s of load → end "
                    f"(idle after start-up: {start / 1024:.1f} MiB)",
                    f"{after_warmup / 1024:.1f} MiB → {end / 1024:.1f} MiB ({growth:+.1f}%); "
                    f"every {SOAK_SAMPLE_INTERVAL_S:.0f} s (MiB): {series}", "—",
                    f"< {TARGET_SOAK_GROWTH_PCT_MAX:.0f}% over 10 minutes",
                    rep.met(growth, at_most=TARGET_SOAK_GROWTH_PCT_MAX)
                    + ("" if self.o.soak_s >= 600 else " (shorter than 10 min)")),
        ]

    def cpu_notes(self) -> None:
        """Where each row's CPU went, per operation: the reading of what limits it."""
        cores = os.cpu_count() or 1
        self.notes.append("CPU per operation in µs, measured window only (medians): the row's "
                          "own server process(es), their Postgres backends, the load "
                          "generator; and the cores the rest of the machine (Redis, idle "
                          "servers, other work) used meanwhile:")
        for row, samples in self.samples.items():
            def per_op(key: str, samples: list[Sample] = samples) -> str:
                return _us(rep.median([_cpu_per_op_us(s, key) for s in samples]))
            others = rep.median([s.extra["others_cpu_s"] / s.extra["wall_s"]
                                 for s in samples if s.extra.get("wall_s")])
            self.notes.append(
                f"  - {ROW_LABELS.get(row, row)}: server {per_op('server_cpu_s')}, Postgres "
                f"{per_op('pg_cpu_s')}, load generator {per_op('client_cpu_s')}; others "
                f"{others:.1f} of {cores} cores")

    def collect_notes(self) -> None:
        self.cpu_notes()
        for row, samples in self.samples.items():
            errors: dict[str, int] = {}
            for s in samples:
                for code, n in s.result.errors.items():
                    errors[code] = errors.get(code, 0) + n
            label = ROW_LABELS.get(row, row)
            if errors:
                shown = ", ".join(f"{code} × {n:,}" for code, n in sorted(errors.items()))
                self.notes.append(f"{label}: errors (not counted as throughput): {shown}")
            not_replayed = sum(s.result.not_replayed for s in samples)
            if not_replayed:
                self.notes.append(f"{label}: {not_replayed:,} answers were not marked replay")
            shed = sum(s.result.shed for s in samples)
            if shed:
                self.notes.append(f"{label}: {shed:,} scheduled calls shed (client in-flight "
                                  "bound reached): the server could not keep up")
        if self.reuseport:
            self.notes.append(f"SO_REUSEPORT, second process on the same port: {self.reuseport}")
        self._redis_failure_notes()

    def _redis_failure_notes(self) -> None:
        if self.main is not None:
            failures = self.main.log_path.read_text(errors="replace").count(REDIS_SKIPPED_LOG)
            if failures:
                self.notes.append(
                    f"the main server logged {failures:,} Redis failure(s) "
                    f"(\"{REDIS_SKIPPED_LOG}\": a call over WALLET_REDIS_TIMEOUT_MS, default "
                    "50 ms; Redis is then skipped for 1 s and replays go to Postgres)")
        if self.baseline is not None:
            failures = self.baseline.log_path.read_text(errors="replace").count(
                baseline_wallet.REDIS_FAILED_LOG)
            if failures:
                self.notes.append(
                    f"the baseline logged {failures:,} Redis failure(s) (a call over "
                    f"{baseline_wallet.REDIS_TIMEOUT_S * 1000:.0f} ms; it then reads Postgres)")


def _ops(s: Sample) -> float:
    return s.ops_per_s


def _p50(s: Sample) -> float:
    return s.result.percentile_ms(0.5)


def _p99(s: Sample) -> float:
    return s.result.percentile_ms(0.99)


def _cpu_per_op_us(s: Sample, key: str) -> float:
    """One role's CPU in the measured window per operation completed in it, in µs."""
    return 1e6 * s.extra[key] / s.result.ops if s.result.ops else float("nan")


def _system_cpu_per_op_us(s: Sample) -> float:
    """The row's server process(es) and their Postgres backends, per operation, in µs."""
    return _cpu_per_op_us(s, "server_cpu_s") + _cpu_per_op_us(s, "pg_cpu_s")


def _us(value: float) -> str:
    return f"{value:,.0f} µs"


# -- set-up of the environment ----------------------------------------------------------------

def _with_redis_db(url: str, db: int) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))


async def prepare_stores(opts: Options, database_url: str,
                         redis_url: str) -> tuple[str, str, str]:
    """Fresh bench database (migrated, with scratch tables) and flushed Redis db index.
    Returns (bench database URL, PostgreSQL version, Redis version)."""
    bench_url = bench_pg.with_database(database_url, opts.bench_db)
    await bench_pg.recreate_database(database_url, opts.bench_db)
    env = {**os.environ, "DATABASE_URL": bench_url}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "wallet_core", "migrate"], env=env,
        capture_output=True, text=True, timeout=MIGRATE_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise BenchError(f"wallet-core migrate failed:\n{done.stdout}{done.stderr}")
    await bench_pg.create_scratch_tables(bench_url)
    client = aioredis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S,
                               socket_connect_timeout=REDIS_TIMEOUT_S)
    try:
        await client.flushdb()
        redis_version = str((await client.info("server")).get("redis_version", "?"))
    finally:
        await client.aclose()
    return bench_url, await bench_pg.server_version(bench_url), redis_version


async def _redis_count(url: str, pattern: str) -> int:
    client = aioredis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                               socket_connect_timeout=REDIS_TIMEOUT_S)
    try:
        found = 0
        async for _ in client.scan_iter(match=pattern, count=1000):
            found += 1
        return found
    finally:
        await client.aclose()


def server_env(opts: Options, *, bench_db_url: str, redis_url: str,
               token: str) -> dict[str, str]:
    # Inherited WALLET_* settings are dropped: the run must not depend on the shell.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WALLET_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({
        "DATABASE_URL": bench_db_url,
        "REDIS_URL": redis_url,
        "WALLET_CALLERS": orjson.dumps({"bench": {"token": token, "scopes": SCOPES}}).decode(),
        "WALLET_LOG_LEVEL": "WARNING",
        "WALLET_SHUTDOWN_GRACE_MS": "2000",
        # The bonus sweeper would touch Postgres every 5 s; the replay row checks that the
        # servers do not touch it at all, and no bonus is granted here.
        "WALLET_BONUS_SWEEP_INTERVAL_MS": "3600000",
    })
    env.update(opts.server_env)
    return env


def _settings(opts: Options) -> dict[str, str]:
    mode = (f"soak of {opts.soak_s} s" if opts.soak_s else
            f"{opts.rounds} round(s); each row {opts.warmup_s:g} s warm-up + "
            f"{opts.seconds:g} s measured per round")
    return {
        "mode": mode,
        "load": (f"{opts.load_procs} load process(es), grpc.aio on uvloop, "
                 f"{opts.channels} connection(s) each; {opts.concurrency} calls in flight "
                 "(closed loop) unless said otherwise"),
        "servers": "`python -m wallet_core serve`, default settings except the log level "
                   "(WARNING), the bonus sweeper (off) and WALLET_GROUP_COMMIT per row"
                   + "".join(f", {k}={v}" for k, v in opts.server_env.items()),
        "baseline": ("`python -m loadtests.baseline_wallet` (rows B*): a textbook wallet, one "
                     "transaction per Bet (Redis GET, BEGIN, SELECT … FOR UPDATE, UPDATE, "
                     "INSERT journal, COMMIT, Redis SET), asyncpg pool of "
                     f"{baseline_wallet.POOL_SIZE}, schema `baseline` in the same database, "
                     "the same Redis db; its players funded by SQL"),
        "data": (f"{opts.players:,} players funded through the API; Bet of 1 cent; fresh "
                 f"database `{opts.bench_db}`, Redis db {opts.redis_db}"),
    }


async def run(opts: Options, fleet: Fleet, pool: LoadPool) -> str:
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url or not redis_url:
        raise BenchError("DATABASE_URL and REDIS_URL are required (scripts/bench.sh sets "
                         "them from scripts/services.sh ensure)")
    bench_redis = _with_redis_db(redis_url, opts.redis_db)
    bench_url, pg_version, redis_version = await prepare_stores(opts, database_url,
                                                                bench_redis)
    facts = rep.machine_facts(postgres=pg_version, redis=redis_version)
    token = secrets.token_hex(16)
    fleet.base_env = server_env(opts, bench_db_url=bench_url, redis_url=bench_redis,
                                token=token)
    bench = Bench(opts, fleet, pool, token=token, bench_db_url=bench_url,
                  redis_url=bench_redis)
    bench.admin = await asyncpg.connect(bench_url, timeout=bench_pg.ADMIN_TIMEOUT_S)
    try:
        return await _run_bench(opts, bench, facts)
    finally:
        await bench.admin.close(timeout=5)


async def _run_bench(opts: Options, bench: Bench, facts: dict[str, str]) -> str:
    await bench.start_servers(soak=bool(opts.soak_s))
    await bench.probe_batch()
    await bench.setup_players()
    if opts.soak_s:
        await bench.soak()
        rows, title = bench.soak_rows(), "Wallet soak"
    else:
        await bench.fund_baseline()
        await bench.seed_replays(bench.wallet, "seed")
        await bench.seed_replays(bench.base, "bseed")
        for r in range(opts.rounds):
            await bench.one_round(r)
        assert bench.main is not None
        bench.rss_kib["end"] = bench.main.rss_kib()
        rows, title = bench.rows(), "Wallet benchmark"
    bench.collect_notes()
    load1, load5, load15 = os.getloadavg()
    facts["load average at end (1/5/15 min)"] = f"{load1:.2f} / {load5:.2f} / {load15:.2f}"
    return rep.render(title=title, facts=facts, settings=_settings(opts), rows=rows,
                      notes=bench.notes, command=opts.command)


# -- command line -----------------------------------------------------------------------------

def parse_args(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true",
                   help="one round of 3 s rows, 2,000 players (about 75 s)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; quick 1)")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per row")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per row")
    p.add_argument("--players", type=int, default=None,
                   help="random players (default 10,000; quick 2,000)")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight in all")
    p.add_argument("--load-procs", type=int, default=2, help="load generator processes")
    p.add_argument("--channels", type=int, default=1,
                   help="connections per load process (more costs ~10%% on the empty RPC)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--batch-concurrency", type=int, default=8, help="batches in flight")
    # 32: with the wallet servers' pools (4 × 8) it stays well under a default
    # max_connections of 100 that other work on this machine shares; 64 gave ~10% more.
    p.add_argument("--pg-connections", type=int, default=32, help="row 7 connections")
    p.add_argument("--replay-keys", type=int, default=2000, help="bets in the replay set")
    p.add_argument("--bench-db", default="wallet_bench", help="dropped and re-created")
    p.add_argument("--redis-db", type=int, default=14, help="Redis db index (flushed)")
    p.add_argument("--soak", type=int, default=0, metavar="SECONDS",
                   help="steady Bet load this long, RSS sampled every 10 s (no other rows)")
    p.add_argument("--markdown-out", type=Path, help="also write the report to this file")
    p.add_argument("--py-spy", type=Path, metavar="FILE",
                   help="profile the main server during round 1's Bet row with py-spy "
                        "(pip install py-spy); collapsed stacks go to FILE")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for every wallet server (repeatable)")
    a = p.parse_args(argv)
    server_env_pairs = dict(kv.split("=", 1) for kv in a.server_env if "=" in kv)
    if len(server_env_pairs) != len(a.server_env):
        p.error("--server-env takes KEY=VALUE")
    a.players = a.players or (2_000 if a.quick else 10_000)
    checks = [(1 <= a.players <= 1_000_000, "--players: 1..1,000,000"),
              (1 <= a.concurrency <= 1024, "--concurrency: 1..1024"),
              (1 <= a.load_procs <= 8, "--load-procs: 1..8"),
              (1 <= a.channels <= 64, "--channels: 1..64"),
              (1 <= a.batch_size <= 1000, "--batch-size: 1..1000 (the RPC's limit)"),
              (1 <= a.batch_concurrency <= 256, "--batch-concurrency: 1..256"),
              (1 <= a.pg_connections <= 64, "--pg-connections: 1..64"),
              (1 <= a.replay_keys <= 100_000, "--replay-keys: 1..100,000"),
              (0.5 <= a.seconds <= 60, "--seconds: 0.5..60"),
              (0 <= a.warmup <= 30, "--warmup: 0..30"),
              (0 <= a.redis_db <= 15, "--redis-db: 0..15"),
              (0 <= a.soak <= SOAK_MAX_S, f"--soak: 0..{SOAK_MAX_S}"),
              (a.rounds is None or 1 <= a.rounds <= 20, "--rounds: 1..20")]
    for ok, message in checks:
        if not ok:
            p.error(message)
    try:
        bench_pg.check_bench_db_name(a.bench_db)
    except ValueError as exc:
        p.error(str(exc))
    if a.py_spy and bench_profile.py_spy() is None:
        p.error("--py-spy: py-spy not found (.venv/bin/pip install py-spy)")
    if a.py_spy and a.soak:
        p.error("--py-spy profiles the rows, not the soak")
    command = os.environ.get("BENCH_COMMAND") or shlex.join(["python", "-m", "loadtests.bench",
                                                             *argv])
    return Options(rounds=a.rounds or (1 if a.quick else 3), seconds=a.seconds,
                   warmup_s=a.warmup, players=a.players, concurrency=a.concurrency,
                   load_procs=a.load_procs, channels=a.channels, batch_size=a.batch_size,
                   batch_concurrency=a.batch_concurrency, pg_connections=a.pg_connections,
                   replay_keys=a.replay_keys, bench_db=a.bench_db, redis_db=a.redis_db,
                   soak_s=a.soak, markdown_out=a.markdown_out, server_env=server_env_pairs,
                   py_spy_out=a.py_spy, command=command)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM: the same orderly clean-up as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="wallet-bench-"))
    fleet = Fleet(workdir, {})
    pool = LoadPool(opts.load_procs)
    ok = False
    try:
        pool.start()
        report = uvloop.run(run(opts, fleet, pool))
        ok = True
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        fleet.stop_all()
        pool.close()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"server logs kept in {workdir}")
    print(report)
    if opts.markdown_out:
        opts.markdown_out.write_text(report)
        log(f"wrote {opts.markdown_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
