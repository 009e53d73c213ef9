"""`python -m loadtests.bench`: the wallet's benchmark, one Markdown table from one run.

It starts everything it measures: a fresh bench database (dropped and re-created, migrated
with `wallet-core migrate`), its own Redis database index (flushed), wallet servers as
subprocesses (group commit on; group commit off; two processes sharing one port), and load
processes that keep a fixed number of grpc.aio calls in flight on uvloop for a fixed time.
Players are opened and funded through the API before anything is measured.

All rows are measured in rounds: every round runs every row once, so noise from other work
on this shared machine hits all rows alike, and ratios are taken inside a round. The table
shows medians over the rounds with the lowest and highest in brackets. Rows (issue 4):
1 empty-RPC ceiling; 2 Bet throughput, p50/p99 and p99 at 70% of saturation (open loop);
3 the same with group commit off; 4 one hot player; 5 replays; 6 ExecuteBatch(100);
7 raw Postgres ceiling, one operation per call; 8 server RSS; and two server processes on
one port vs one. `--soak SECONDS` runs steady Bet load instead and reports RSS growth.

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
from collections.abc import Callable
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

from loadtests import bench_pg, bench_profile
from loadtests import bench_report as rep
from loadtests.bench_load import HOT_PLAYER, Kind, LoadSpec, WindowResult, proc_cpu_s
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
OPEN_LOOP_FRACTION = 0.7
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
SCOPES = ["game", "payments", "read", "bonus"]
ROW_LABELS = {"empty": "row 1 (empty RPC)", "bet": "row 2 (Bet)", "bet_at_70": "row 2b (Bet at 70%)",
              "bet_gc_off": "row 3 (group commit off)", "hot": "row 4 (hot player)",
              "replay": "row 5 (replays)", "batch": "row 6 (ExecuteBatch, per op)",
              "pg_raw": "row 7 (raw Postgres)", "multi": "row 9 (two processes)",
              "soak": "soak (Bet)"}


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
class CpuSnapshot:
    """CPU seconds so far: ours by role, and the whole machine's (from /proc/stat)."""

    at: float
    servers_s: float
    client_s: float
    backends_s: dict[int, float]
    machine_busy_s: float

    def cost(self, later: CpuSnapshot) -> dict[str, float]:
        """CPU spent between two snapshots, by role, in seconds; 'wall_s' the time between."""
        pg = sum(cpu - self.backends_s.get(pid, 0.0) for pid, cpu in later.backends_s.items())
        servers = later.servers_s - self.servers_s
        client = later.client_s - self.client_s
        busy = later.machine_busy_s - self.machine_busy_s
        return {"server_cpu_s": servers, "pg_cpu_s": pg, "client_cpu_s": client,
                "others_cpu_s": max(0.0, busy - servers - pg - client),
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
        shared_port = lease_port()
        self.multi = [self.fleet.start("wallet-multi-1", shared_port, self._shared_env())]
        await asyncio.gather(self.fleet.wait_serving(self.gc_off),
                             self.fleet.wait_serving(self.multi[0]))
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
        pids = await bench_pg.wallet_backend_pids(self.admin)
        return CpuSnapshot(at=time.monotonic(),
                           servers_s=sum(s.cpu_s() for s in self.fleet.servers),
                           client_s=self.pool.cpu_s(),
                           backends_s={pid: proc_cpu_s(pid) for pid in pids},
                           machine_busy_s=_machine_busy_s())

    async def measure(self, row: str, spec: LoadSpec, procs: int | None = None) -> Sample:
        before = await self.cpu_snapshot()
        result, window_epoch_s = await self.pool.run(spec, procs)
        cost = before.cost(await self.cpu_snapshot())
        if spec.kind is Kind.PG_RAW:
            cost["pg_cpu_s"] = result.backend_cpu_s
            cost["others_cpu_s"] = max(0.0, cost["others_cpu_s"] - result.backend_cpu_s)
        sample = Sample(result, {"window_epoch_s": window_epoch_s, **cost})
        self.samples.setdefault(row, []).append(sample)
        p99 = result.percentile_ms(0.99)
        log(f"  {row:<10} {sample.ops_per_s:>9,.0f} ops/s  p99 {p99:6.1f} ms"
            + (f"  errors {dict(result.errors)}" if result.errors else ""))
        return sample

    @property
    def main_target(self) -> str:
        assert self.main is not None
        return f"127.0.0.1:{self.main.port}"

    async def setup_players(self) -> None:
        """Open and fund every player (and the hot one) through the API; by ExecuteBatch
        when the server has it, which is several times faster."""
        began = time.monotonic()
        wallets = self.o.players + 1
        if self.batch_unavailable:
            spec = self.spec(Kind.SETUP, self.main_target, "setup", count=wallets,
                             warmup_s=0.0)
        else:
            spec = self.spec(Kind.SETUP_BATCH, self.main_target, "setup",
                             count=-(-wallets // self.o.batch_size), warmup_s=0.0,
                             concurrency=self.o.batch_concurrency)
        result, _ = await self.pool.run(spec)
        if result.errors or result.ops != wallets:
            raise BenchError(f"setting up players failed: {result.ops:,} of {wallets:,} "
                             f"wallets; errors {dict(result.errors)}")
        log(f"opened and funded {self.o.players:,} players + {HOT_PLAYER} in "
            f"{time.monotonic() - began:.1f} s ({'unary' if self.batch_unavailable else 'batch'})")

    async def seed_replays(self) -> None:
        """Record the replay set, then send it once more: a replay whose first answer did
        not reach Redis (a Redis timeout under load) is cached by this second pass."""
        for what in ("seeding", "warming"):
            spec = self.spec(Kind.SEED_REPLAY, self.main_target, "seed",
                             count=self.o.replay_keys, warmup_s=0.0)
            result, _ = await self.pool.run(spec)
            if result.errors:
                raise BenchError(f"{what} the replay set failed: {dict(result.errors)}")
        cached = await _redis_count(self.redis_url, f"*:{spec.tag}-replay-*")
        if cached < self.o.replay_keys:
            self.notes.append(f"replay set: only {cached:,} of {self.o.replay_keys:,} outcomes "
                              "were in Redis before the replay rows (the others replay from "
                              "Postgres)")

    async def probe_batch(self) -> None:
        """One small ExecuteBatch: UNIMPLEMENTED (or any refusal) makes row 6 'not available'."""
        md = (("authorization", f"Bearer {self.token}"),)
        probe = pb.OpenWalletRequest(player_id="bench-probe", currency="USD",
                                     idempotency_key=f"{self.run_tag}-probe")
        async with grpc.aio.insecure_channel(self.main_target) as channel:
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

    async def one_round(self, r: int) -> None:
        o = self.o
        log(f"round {r + 1}/{o.rounds}")
        main = self.main_target
        await self.measure("empty", self.spec(Kind.HEALTH, main, f"empty-{r}"))
        bet = await self._measure_bet(r)
        rate = max(1.0, OPEN_LOOP_FRACTION * bet.ops_per_s)
        await self.measure("bet_at_70", self.spec(Kind.BET_RANDOM, main, f"open-{r}",
                                                  rate_per_s=rate))
        assert self.gc_off is not None
        await self.measure("bet_gc_off", self.spec(Kind.BET_RANDOM,
                                                   f"127.0.0.1:{self.gc_off.port}", f"off-{r}"))
        await self.measure("hot", self.spec(Kind.BET_HOT, main, f"hot-{r}"))
        assert self.main is not None
        log_offset = self.main.log_path.stat().st_size
        replay = await self.measure("replay", self.spec(Kind.BET_REPLAY, main, f"x{r}",
                                                        tag=f"{self.run_tag}-seed"))
        touched, conns = await bench_pg.wallet_connections_touched_since(
            self.bench_db_url, replay.extra["window_epoch_s"] - o.warmup_s)
        with self.main.log_path.open("rb") as f:
            f.seek(log_offset)
            redis_failures = f.read().decode(errors="replace").count(REDIS_SKIPPED_LOG)
        replay.extra.update(pg_touched=touched, pg_connections=conns,
                            redis_failures=redis_failures)
        if not self.batch_unavailable:
            await self.measure("batch", self.spec(Kind.BATCH, main, f"batch-{r}",
                                                  concurrency=o.batch_concurrency))
        await self.measure("pg_raw", self.spec(Kind.PG_RAW, "", f"pg-{r}",
                                               concurrency=o.pg_connections,
                                               database_url=self.bench_db_url), procs=1)
        cpu_before = [s.cpu_s() for s in self.multi]
        multi = await self.measure("multi", self.spec(Kind.BET_RANDOM, self.multi_target,
                                                      f"multi-{r}",
                                                      channels=self._multi_channels))
        cpu = [s.cpu_s() - b for s, b in zip(self.multi, cpu_before, strict=True)]
        multi.extra["cpu_share_min"] = min(cpu) / max(sum(cpu), 1e-9)

    async def _measure_bet(self, r: int) -> Sample:
        """Row 2; in the first round, under py-spy when asked."""
        spec = self.spec(Kind.BET_RANDOM, self.main_target, f"bet-{r}")
        out = self.o.py_spy_out
        if r > 0 or out is None:
            return await self.measure("bet", spec)
        assert self.main is not None
        recorder = bench_profile.start(self.main.pid, spec.warmup_s + spec.duration_s, out)
        try:
            sample = await self.measure("bet", spec)
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
        spec = self.spec(Kind.BET_RANDOM, self.main_target, "soak", warmup_s=0.0,
                         duration_s=float(self.o.soak_s))

        async def sample_rss() -> None:
            began = time.monotonic()
            while True:
                await asyncio.sleep(SOAK_SAMPLE_INTERVAL_S)
                samples.append((time.monotonic() - began, main.rss_kib()))
                log(f"  soak t={samples[-1][0]:5.0f} s  RSS {samples[-1][1] / 1024:.1f} MiB")

        sampler = asyncio.create_task(sample_rss())
        try:
            await self.measure("soak", spec)
        finally:
            sampler.cancel()
        samples.append((float(self.o.soak_s), main.rss_kib()))
        self.soak_samples = samples

    # -- the table -----------------------------------------------------------------------

    def _values(self, row: str, fn: Callable[[Sample], float]) -> list[float]:
        return [fn(s) for s in self.samples.get(row, [])]

    def _ratios(self, row: str, ceiling: str) -> list[float]:
        return [a.ops_per_s / b.ops_per_s
                for a, b in zip(self.samples.get(row, []), self.samples.get(ceiling, []),
                                strict=False) if b.ops_per_s]

    def _throughput_latency(self, row: str, unit: str = "ops/s") -> str:
        tput = self._values(row, lambda s: s.ops_per_s)
        p50 = self._values(row, lambda s: s.result.percentile_ms(0.5))
        p99 = self._values(row, lambda s: s.result.percentile_ms(0.99))
        return (f"{rep.spread(tput, rep.count)} {unit}; p50 {rep.spread(p50, rep.ms)}, "
                f"p99 {rep.spread(p99, rep.ms)}")

    def rows(self) -> list[rep.Row]:
        o = self.o
        rows = [
            rep.Row("1", f"ceiling: empty unary RPC (grpc.health Check), {o.concurrency} in "
                    "flight", self._throughput_latency("empty", "RPS"), "1 (ceiling)", "—", "—"),
            self._row_bet(), self._row_open_loop(), self._row_gc_off(), self._row_hot(),
            self._row_replay(), self._row_batch(),
            rep.Row("7", f"raw Postgres ceiling, one op per call (CTE: guarded UPDATE + "
                    f"journal INSERT, {bench_pg.ACCOUNTS:,} rows, {o.pg_connections} "
                    "connections)", self._throughput_latency("pg_raw"), "1 (ceiling)", "—", "—"),
            self._row_rss(), self._row_multi(),
        ]
        return rows

    def _row_bet(self) -> rep.Row:
        r = self._ratios("bet", "empty")
        return rep.Row("2", f"Bet, random players ({self.o.players:,}), {self.o.concurrency} "
                       "in flight", self._throughput_latency("bet"),
                       f"{rep.spread(r, rep.ratio)} of row 1",
                       f"≥ {TARGET_BET_VS_EMPTY_MIN}",
                       rep.met(rep.median(r), at_least=TARGET_BET_VS_EMPTY_MIN))

    def _row_open_loop(self) -> rep.Row:
        p99 = self._values("bet_at_70", lambda s: s.result.percentile_ms(0.99))
        p50 = self._values("bet_at_70", lambda s: s.result.percentile_ms(0.5))
        rate = self._values("bet_at_70", lambda s: s.ops_per_s)
        return rep.Row("2b", "Bet p99 at 70% of row 2's throughput (open loop, latency from "
                       "the scheduled send)",
                       f"p99 {rep.spread(p99, rep.ms)}, p50 {rep.spread(p50, rep.ms)} at "
                       f"{rep.spread(rate, rep.count)} ops/s", "—",
                       f"≤ {TARGET_P99_AT_70_MS_MAX:.0f} ms",
                       rep.met(rep.median(p99), at_most=TARGET_P99_AT_70_MS_MAX))

    def _row_gc_off(self) -> rep.Row:
        r = [a / b for a, b in zip(self._values("bet", lambda s: s.ops_per_s),
                                   self._values("bet_gc_off", lambda s: s.ops_per_s),
                                   strict=False) if b]
        return rep.Row("3", "Bet, group commit off (WALLET_GROUP_COMMIT=false), same load",
                       self._throughput_latency("bet_gc_off"),
                       f"on/off {rep.spread(r, rep.times)}",
                       f"≥ {TARGET_GROUP_COMMIT_GAIN_MIN}×",
                       rep.met(rep.median(r), at_least=TARGET_GROUP_COMMIT_GAIN_MIN))

    def _row_hot(self) -> rep.Row:
        r = self._ratios("hot", "bet")
        return rep.Row("4", "Bet, one hot player (every bet on one wallet); every Bet of "
                       "rows 2-5 also credits the one house account `house:bench-slots`",
                       self._throughput_latency("hot"), f"{rep.spread(r, rep.ratio)} of row 2",
                       f"≥ {TARGET_HOT_VS_RANDOM_MIN}",
                       rep.met(rep.median(r), at_least=TARGET_HOT_VS_RANDOM_MIN))

    def _row_replay(self) -> rep.Row:
        r = self._ratios("replay", "empty")
        touched = self._values("replay", lambda s: s.extra.get("pg_touched", 0))
        failures = sum(self._values("replay", lambda s: s.extra.get("redis_failures", 0)))
        untouched = "untouched" if not any(touched) else (
            f"touched by {max(touched):.0f} wallet connection(s) after {failures:.0f} Redis "
            "failure(s)")
        return rep.Row("5", f"Bet replays: {self.o.replay_keys:,} recorded bets sent again "
                       "(same keys, same requests)",
                       f"{self._throughput_latency('replay')}; Postgres {untouched} during "
                       "the rows", f"{rep.spread(r, rep.ratio)} of row 1",
                       f"≥ {TARGET_REPLAY_VS_EMPTY_MIN}",
                       rep.met(rep.median(r), at_least=TARGET_REPLAY_VS_EMPTY_MIN))

    def _row_batch(self) -> rep.Row:
        figure = (f"ExecuteBatch of {self.o.batch_size} bets (atomic=false), "
                  f"{self.o.batch_concurrency} calls in flight")
        target = f"≥ {TARGET_BATCH_VS_PG_MIN:.0f}× row 7 (≈ 30,000 ops/s)"
        if self.batch_unavailable:
            return rep.Row("6", figure, f"not available ({self.batch_unavailable})", "—",
                           target, "n/a")
        calls = self._values("batch", lambda s: s.calls_per_s)
        r = self._ratios("batch", "pg_raw")
        return rep.Row("6", figure,
                       f"{self._throughput_latency('batch')} per call; "
                       f"{rep.spread(calls, rep.count)} calls/s",
                       f"{rep.spread(r, rep.times)} row 7", target,
                       rep.met(rep.median(r), at_least=TARGET_BATCH_VS_PG_MIN))

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
        self.notes.append("CPU per operation in µs (medians; warm-up included), and the cores "
                          "the rest of the machine (Redis included) used meanwhile:")
        for row, samples in self.samples.items():
            def per_op_us(key: str, samples: list[Sample] = samples) -> float:
                return rep.median([1e6 * s.extra[key] / s.result.all_ops
                                   for s in samples if s.result.all_ops])
            others = rep.median([s.extra["others_cpu_s"] / s.extra["wall_s"]
                                 for s in samples if s.extra.get("wall_s")])
            self.notes.append(
                f"  - {ROW_LABELS.get(row, row)}: wallet server {per_op_us('server_cpu_s'):,.0f}"
                f", Postgres {per_op_us('pg_cpu_s'):,.0f}, load generator "
                f"{per_op_us('client_cpu_s'):,.0f}; others {others:.1f} of {cores} cores")

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
        if self.main is not None:
            failures = self.main.log_path.read_text(errors="replace").count(REDIS_SKIPPED_LOG)
            if failures:
                self.notes.append(
                    f"the main server logged {failures:,} Redis failure(s) "
                    f"(\"{REDIS_SKIPPED_LOG}\": a call over WALLET_REDIS_TIMEOUT_MS, default "
                    "50 ms; Redis is then skipped for 1 s and replays go to Postgres)")


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
        await bench.seed_replays()
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
    p.add_argument("--quick", action="store_true", help="one round of 3 s rows, 2,000 players (about a minute)")
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
