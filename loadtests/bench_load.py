"""Load generator of the benchmark: what runs inside each load process.

A load process receives a `LoadSpec`, opens its own grpc.aio channels (or asyncpg
connections) on a uvloop loop, waits for a start instant shared by all load processes, and
then either keeps a fixed number of calls in flight (closed loop) or starts calls at a fixed
rate (open loop) for a fixed time. It answers with a `WindowResult`: calls and operations
completed inside the measured window, errors by status, and a latency histogram. Latencies
go into a fixed-size histogram, never an unbounded list, so a 10-minute soak costs the same
memory as a 3-second row.

Everything here is driven by `loadtests.bench` through `loadtests.bench_procs.LoadPool`.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing.connection import Connection
from pathlib import Path

import asyncpg
import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from loadtests import bench_pg

# Every call has a deadline: a stuck server costs a row this long at most, not forever.
CALL_TIMEOUT_S = 10.0
# Waiting for channels to connect before a row starts.
CONNECT_TIMEOUT_S = 10.0
# Open loop: calls allowed in flight per load process before new ones are shed (counted,
# not sent). Above the server's 256 so the server's own backpressure shows first.
OPEN_LOOP_IN_FLIGHT_MAX = 512
# Latency histogram: 10 µs buckets up to 100 ms, 1 ms buckets up to 10 s, one overflow.
_FINE_US = 10
_FINE_LIMIT_US = 100_000
_COARSE_US = 1_000
_COARSE_LIMIT_US = 10_000_000
CURRENCY = "USD"
GAME_ID = "bench-slots"
BET_AMOUNT_MINOR = 1
# Funding: a random player can take a million 1-cent bets, the hot player ten billion.
DEPOSIT_MINOR = 100_000_000
HOT_DEPOSIT_MINOR = 10_000_000_000
HOT_PLAYER = "bench-hot"


class Kind(StrEnum):
    HEALTH = "health"            # grpc.health.v1 Check: the empty-RPC ceiling
    BET_RANDOM = "bet_random"    # Bet on a uniformly random pre-funded player
    BET_HOT = "bet_hot"          # Bet, every call on the same wallet
    SEED_REPLAY = "seed_replay"  # the fixed set of bets that BET_REPLAY sends again
    BET_REPLAY = "bet_replay"    # exact repeats of SEED_REPLAY's requests
    BATCH = "batch"              # ExecuteBatch of `batch_size` bets on random players
    SETUP = "setup"              # OpenWallet + Deposit for every player (fixed count)
    SETUP_BATCH = "setup_batch"  # the same, `batch_size` players per ExecuteBatch
    PG_RAW = "pg_raw"            # one-statement bet equivalent straight on Postgres
    # Responsible gambling (docs/COMPLIANCE.md): players of their own with every limit set
    SETUP_LIMITS = "setup_limits"  # OpenWallet + Deposit + SetLimits (fixed count)
    BET_LIMITED = "bet_limited"  # Bet on a random one of them


@dataclass(frozen=True, slots=True)
class LoadSpec:
    kind: Kind
    tag: str                          # makes idempotency keys unique per run and row
    targets: tuple[str, ...] = ()     # gRPC targets; more than one = client round robin
    token: str = ""
    concurrency: int = 64             # in flight in all (closed loop), split over processes
    rate_per_s: float = 0.0           # > 0: open loop at this total rate
    warmup_s: float = 0.5
    duration_s: float = 3.0
    channels: int = 1                 # HTTP/2 connections per load process
    players: int = 10_000
    replay_count: int = 0
    batch_size: int = 100
    count: int = 0                    # fixed-count jobs (SETUP, SEED_REPLAY): total calls
    database_url: str = field(default="", repr=False)

    @property
    def fixed_count(self) -> bool:
        return self.kind in (Kind.SETUP, Kind.SETUP_BATCH, Kind.SEED_REPLAY,
                             Kind.SETUP_LIMITS)


@dataclass(slots=True)
class WindowResult:
    calls: int = 0                    # calls that completed OK inside the window
    ops: int = 0                      # operations inside those calls (batch: per op)
    window_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    latency_hist: Counter[int] = field(default_factory=Counter)
    not_replayed: int = 0             # BET_REPLAY answers without replay=true
    shed: int = 0                     # open loop: calls not sent (in-flight bound reached)
    scheduled: int = 0                # open loop: calls due inside the window

    def merge(self, other: WindowResult) -> None:
        self.calls += other.calls
        self.ops += other.ops
        self.window_s = max(self.window_s, other.window_s)
        self.errors.update(other.errors)
        self.latency_hist.update(other.latency_hist)
        self.not_replayed += other.not_replayed
        self.shed += other.shed
        self.scheduled += other.scheduled

    def percentile_ms(self, q: float) -> float:
        total = sum(self.latency_hist.values())
        if total == 0:
            return float("nan")
        rank = q * total
        seen = 0
        for bucket in sorted(self.latency_hist):
            seen += self.latency_hist[bucket]
            if seen >= rank:
                return _bucket_upper_us(bucket) / 1000
        return _bucket_upper_us(max(self.latency_hist)) / 1000


def _bucket(latency_us: float) -> int:
    if latency_us < _FINE_LIMIT_US:
        return int(latency_us) // _FINE_US
    fine_buckets = _FINE_LIMIT_US // _FINE_US
    if latency_us < _COARSE_LIMIT_US:
        return fine_buckets + int(latency_us - _FINE_LIMIT_US) // _COARSE_US
    return fine_buckets + (_COARSE_LIMIT_US - _FINE_LIMIT_US) // _COARSE_US


def _bucket_upper_us(bucket: int) -> float:
    fine_buckets = _FINE_LIMIT_US // _FINE_US
    if bucket < fine_buckets:
        return (bucket + 1) * _FINE_US
    return _FINE_LIMIT_US + (bucket - fine_buckets + 1) * _COARSE_US


# -- requests: deterministic where they must be sent again ----------------------------------

def player_id(index: int) -> str:
    return f"bench-{index:05d}"


def limited_player_id(index: int) -> str:
    return f"bench-lim-{index:05d}"


# Every limit a player can set, high enough that no bench bet is refused: the row measures
# what checking and counting them costs, not refusals.
LIMIT_MINOR = 10**11
ALL_LIMITS = [pb.LimitChange(kind=k, period=p, amount=LIMIT_MINOR)
              for k in (pb.LIMIT_KIND_DEPOSIT, pb.LIMIT_KIND_LOSS, pb.LIMIT_KIND_WAGER)
              for p in (pb.LIMIT_PERIOD_DAY, pb.LIMIT_PERIOD_WEEK, pb.LIMIT_PERIOD_MONTH)]


def replay_request(tag: str, index: int, players: int) -> pb.BetRequest:
    """The index-th bet of the replay set; SEED_REPLAY and BET_REPLAY build the same one."""
    key = f"{tag}-replay-{index}"
    return pb.BetRequest(player_id=player_id(index % players), currency=CURRENCY,
                         amount=BET_AMOUNT_MINOR, game_id=GAME_ID, round_id=key,
                         idempotency_key=key)


def _bet(player: str, key: str) -> pb.BetRequest:
    return pb.BetRequest(player_id=player, currency=CURRENCY, amount=BET_AMOUNT_MINOR,
                         game_id=GAME_ID, round_id=key, idempotency_key=key)


# One call: takes its sequence number and its lane (the closed loop's coroutine, which keeps
# its channel or connection), returns the operations it completed.
CallFn = Callable[[int, int], Awaitable[int]]


@dataclass(slots=True)
class _Ctx:
    spec: LoadSpec
    worker: int
    workers: int
    result: WindowResult


@dataclass(slots=True)
class _Client:
    """What every call of one job shares: stubs per connection, auth, a seeded RNG."""

    ctx: _Ctx
    channels: list[grpc.aio.Channel]
    wallets: list[pb_grpc.WalletServiceStub]
    md: tuple[tuple[str, str], ...]
    rng: random.Random
    key_prefix: str

    def wallet(self, lane: int) -> pb_grpc.WalletServiceStub:
        return self.wallets[lane % len(self.wallets)]

    def index(self, seq: int) -> int:
        """Load process w takes indexes w, w + workers, ...: together each one once."""
        return self.ctx.worker + seq * self.ctx.workers

    def random_player(self) -> str:
        index = self.rng.randrange(self.ctx.spec.players)
        if self.ctx.spec.kind is Kind.BET_LIMITED:
            return limited_player_id(index)
        return player_id(index)

    async def batch(self, lane: int, ops: list[pb.BatchOperation]) -> int:
        """ExecuteBatch; per-operation errors are counted; returns the operations done."""
        reply = await self.wallet(lane).ExecuteBatch(
            pb.ExecuteBatchRequest(operations=ops, atomic=False), metadata=self.md,
            timeout=CALL_TIMEOUT_S)
        done = 0
        for r in reply.results:
            if r.WhichOneof("outcome") == "error":
                self.ctx.result.errors[f"op:{r.error.reason or r.error.code}"] += 1
            else:
                done += 1
        return done


def _health_calls(c: _Client) -> CallFn:
    stubs = [health_pb2_grpc.HealthStub(ch) for ch in c.channels]
    check = health_pb2.HealthCheckRequest(service="")

    async def call(seq: int, lane: int) -> int:
        await stubs[lane % len(stubs)].Check(check, timeout=CALL_TIMEOUT_S)
        return 1
    return call


def _bet_calls(c: _Client) -> CallFn:
    hot = c.ctx.spec.kind is Kind.BET_HOT

    async def call(seq: int, lane: int) -> int:
        player = HOT_PLAYER if hot else c.random_player()
        await c.wallet(lane).Bet(_bet(player, f"{c.key_prefix}-{seq}"), metadata=c.md,
                                 timeout=CALL_TIMEOUT_S)
        return 1
    return call


def _replay_calls(c: _Client) -> CallFn:
    spec, result = c.ctx.spec, c.ctx.result
    seed = spec.kind is Kind.SEED_REPLAY

    async def call(seq: int, lane: int) -> int:
        request = replay_request(spec.tag, c.index(seq) % spec.replay_count, spec.players)
        reply = await c.wallet(lane).Bet(request, metadata=c.md, timeout=CALL_TIMEOUT_S)
        if not seed and not reply.result.replay:
            result.not_replayed += 1
        return 1
    return call


def _batch_calls(c: _Client) -> CallFn:
    size = c.ctx.spec.batch_size

    async def call(seq: int, lane: int) -> int:
        return await c.batch(lane, [
            pb.BatchOperation(bet=_bet(c.random_player(), f"{c.key_prefix}-{seq}-{i}"))
            for i in range(size)])
    return call


def _setup_batch_calls(c: _Client) -> CallFn:
    spec = c.ctx.spec

    async def call(seq: int, lane: int) -> int:
        # Chunk `index` holds set-up indexes [index * batch_size, ...): opened, then funded.
        first = c.index(seq) * spec.batch_size
        indexes = range(first, min(first + spec.batch_size, spec.players + 1))
        await c.batch(lane, [_open_op(i, spec.players) for i in indexes])
        await c.batch(lane, [_deposit_op(i, spec.players) for i in indexes])
        return len(indexes)
    return call


def _setup_calls(c: _Client) -> CallFn:
    players = c.ctx.spec.players

    async def call(seq: int, lane: int) -> int:
        index = c.index(seq)
        await c.wallet(lane).OpenWallet(_open_op(index, players).open_wallet, metadata=c.md,
                                        timeout=CALL_TIMEOUT_S)
        await c.wallet(lane).Deposit(_deposit_op(index, players).deposit, metadata=c.md,
                                     timeout=CALL_TIMEOUT_S)
        return 1
    return call


def _setup_limits_calls(c: _Client) -> CallFn:
    """A limited player: opened, funded, then every limit set (funded first: the deposit
    would count against the deposit limits)."""
    async def call(seq: int, lane: int) -> int:
        player = limited_player_id(c.index(seq))
        wallet = c.wallet(lane)
        await wallet.OpenWallet(pb.OpenWalletRequest(
            player_id=player, currency=CURRENCY, idempotency_key=f"setup-open-{player}"),
            metadata=c.md, timeout=CALL_TIMEOUT_S)
        await wallet.Deposit(pb.DepositRequest(
            player_id=player, currency=CURRENCY, amount=DEPOSIT_MINOR, psp="bench",
            psp_reference=f"bench-{player}", idempotency_key=f"setup-deposit-{player}"),
            metadata=c.md, timeout=CALL_TIMEOUT_S)
        await wallet.SetLimits(pb.SetLimitsRequest(
            player_id=player, currency=CURRENCY, changes=ALL_LIMITS,
            idempotency_key=f"setup-limits-{player}"), metadata=c.md, timeout=CALL_TIMEOUT_S)
        return 1
    return call


_CALLS: dict[Kind, Callable[[_Client], CallFn]] = {
    Kind.HEALTH: _health_calls, Kind.BET_RANDOM: _bet_calls, Kind.BET_HOT: _bet_calls,
    Kind.SEED_REPLAY: _replay_calls, Kind.BET_REPLAY: _replay_calls, Kind.BATCH: _batch_calls,
    Kind.SETUP_BATCH: _setup_batch_calls, Kind.SETUP: _setup_calls,
    Kind.SETUP_LIMITS: _setup_limits_calls, Kind.BET_LIMITED: _bet_calls,
}


def _grpc_calls(ctx: _Ctx, channels: list[grpc.aio.Channel]) -> CallFn:
    """The call function of a gRPC kind; a lane keeps its connection."""
    spec = ctx.spec
    client = _Client(
        ctx, channels,
        [pb_grpc.WalletServiceStub(ch) for ch in channels],  # type: ignore[no-untyped-call]
        (("authorization", f"Bearer {spec.token}"),),
        random.Random(f"{spec.tag}-{ctx.worker}"), f"{spec.tag}-{ctx.worker}")
    return _CALLS[spec.kind](client)


def _setup_player(index: int, players: int) -> tuple[str, bool]:
    """Player of set-up index `index`; the index after the last random player is the hot one."""
    hot = index == players
    return (HOT_PLAYER if hot else player_id(index)), hot


def _open_op(index: int, players: int) -> pb.BatchOperation:
    player, _ = _setup_player(index, players)
    return pb.BatchOperation(open_wallet=pb.OpenWalletRequest(
        player_id=player, currency=CURRENCY, idempotency_key=f"setup-open-{player}"))


def _deposit_op(index: int, players: int) -> pb.BatchOperation:
    player, hot = _setup_player(index, players)
    return pb.BatchOperation(deposit=pb.DepositRequest(
        player_id=player, currency=CURRENCY, amount=HOT_DEPOSIT_MINOR if hot else DEPOSIT_MINOR,
        psp="bench", psp_reference=f"bench-{player}", idempotency_key=f"setup-deposit-{player}"))


def _channel(spec: LoadSpec, i: int) -> grpc.aio.Channel:
    # A local subchannel pool gives every channel its own TCP connection (the global pool
    # would share one), so SO_REUSEPORT can spread them over the server processes.
    options: list[tuple[str, object]] = [("grpc.use_local_subchannel_pool", 1),
                                         ("grpc.max_receive_message_length", 16 << 20)]
    target = spec.targets[i % len(spec.targets)]
    if "," in target:
        options.append(("grpc.lb_policy_name", "round_robin"))
    return grpc.aio.insecure_channel(target, options=options)


# -- the two loops ---------------------------------------------------------------------------

def _record_error(result: WindowResult, exc: BaseException) -> None:
    if isinstance(exc, grpc.aio.AioRpcError):
        result.errors[exc.code().name] += 1
    elif isinstance(exc, asyncpg.PostgresError):
        result.errors[type(exc).__name__] += 1
    else:
        raise exc


async def _closed_loop(ctx: _Ctx, call: CallFn, start_at: float) -> None:
    """`concurrency` coroutines, each sending its next call when the previous one ends."""
    spec, result = ctx.spec, ctx.result
    t0 = start_at + spec.warmup_s
    t1 = t0 + spec.duration_s
    limit = _share(spec.count, ctx)
    issued = 0

    async def one_lane(lane: int) -> None:
        nonlocal issued
        while True:
            if spec.fixed_count:
                if issued >= limit:
                    return
            elif time.monotonic() >= t1:
                return
            seq = issued
            issued += 1
            began = time.monotonic()
            try:
                ops = await call(seq, lane)
            except (grpc.aio.AioRpcError, asyncpg.PostgresError) as exc:
                _record_error(result, exc)
                continue
            done = time.monotonic()
            if spec.fixed_count or t0 <= done < t1:
                result.calls += 1
                result.ops += ops
                result.latency_hist[_bucket((done - began) * 1e6)] += 1

    await sleep_until(start_at)
    began = time.monotonic()
    await asyncio.gather(*(one_lane(lane) for lane in range(_share(spec.concurrency, ctx))))
    result.window_s = time.monotonic() - began if spec.fixed_count else spec.duration_s


async def _open_loop(ctx: _Ctx, call: CallFn, start_at: float) -> None:
    """Start calls on a fixed schedule whatever the answers; latency counts from the
    scheduled instant, so a slow server cannot hide its queueing (no coordinated omission)."""
    spec, result = ctx.spec, ctx.result
    t0 = start_at + spec.warmup_s
    t1 = t0 + spec.duration_s
    interval_s = ctx.workers / spec.rate_per_s
    in_flight: set[asyncio.Task[None]] = set()

    async def one(seq: int, due: float) -> None:
        try:
            ops = await call(seq, seq)
        except (grpc.aio.AioRpcError, asyncpg.PostgresError) as exc:
            _record_error(result, exc)
            return
        done = time.monotonic()
        if t0 <= due < t1:
            result.calls += 1
            result.ops += ops
            result.latency_hist[_bucket((done - due) * 1e6)] += 1

    seq = 0
    # Stagger the load processes inside one interval so their calls do not arrive in pairs.
    next_due = start_at + interval_s * ctx.worker / ctx.workers
    while next_due < t1:
        await sleep_until(next_due)
        now = time.monotonic()
        while next_due <= now and next_due < t1:
            if t0 <= next_due:
                result.scheduled += 1
            if len(in_flight) >= OPEN_LOOP_IN_FLIGHT_MAX:
                result.shed += 1
            else:
                task = asyncio.create_task(one(seq, next_due))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            seq += 1
            next_due += interval_s
    if in_flight:
        await asyncio.wait(in_flight, timeout=CALL_TIMEOUT_S + 1)
    result.window_s = spec.duration_s


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/<pid>/stat); 0 if unreadable or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _share(total: int, ctx: _Ctx) -> int:
    """This load process's part of a total split over all of them."""
    return total // ctx.workers + (ctx.worker < total % ctx.workers)


async def sleep_until(instant: float) -> None:
    delay = instant - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


# -- one job in a load process ---------------------------------------------------------------

async def _run_grpc(ctx: _Ctx, conn: Connection) -> None:
    channels = [_channel(ctx.spec, i) for i in range(ctx.spec.channels)]
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await asyncio.gather(*(c.channel_ready() for c in channels))
        await _go(ctx, _grpc_calls(ctx, channels), conn)
    finally:
        await asyncio.gather(*(c.close(None) for c in channels))


async def _run_pg(ctx: _Ctx, conn: Connection) -> None:
    # One connection per lane: one statement in flight each, committed on its own. The
    # application name lets the benchmark find these backends and read their CPU.
    conns = await asyncio.gather(*(
        asyncpg.connect(ctx.spec.database_url, timeout=CONNECT_TIMEOUT_S,
                        command_timeout=CALL_TIMEOUT_S,
                        server_settings={"application_name": bench_pg.RAW_APP})
        for _ in range(_share(ctx.spec.concurrency, ctx))))
    try:
        rng = random.Random(f"{ctx.spec.tag}-{ctx.worker}")

        async def pg_call(seq: int, lane: int) -> int:
            await conns[lane % len(conns)].execute(
                bench_pg.DEBIT_AND_JOURNAL, rng.randrange(1, bench_pg.ACCOUNTS + 1),
                BET_AMOUNT_MINOR)
            return 1

        await _go(ctx, pg_call, conn)
    finally:
        await asyncio.gather(*(c.close(timeout=5) for c in conns), return_exceptions=True)


async def _go(ctx: _Ctx, call: CallFn, conn: Connection) -> None:
    """Say ready, wait for the shared start instant, run the loop."""
    conn.send(("ready", None))
    start_at = await asyncio.to_thread(_recv_start, conn)
    if ctx.spec.rate_per_s > 0:
        await _open_loop(ctx, call, start_at)
    else:
        await _closed_loop(ctx, call, start_at)


def _recv_start(conn: Connection) -> float:
    if not conn.poll(CONNECT_TIMEOUT_S * 3):
        raise TimeoutError("no start instant from the benchmark")
    message, start_at = conn.recv()
    assert message == "start", message
    return float(start_at)


async def _job(spec: LoadSpec, worker: int, workers: int, conn: Connection) -> WindowResult:
    ctx = _Ctx(spec, worker, workers, WindowResult())
    if spec.kind is Kind.PG_RAW:
        await _run_pg(ctx, conn)
    else:
        await _run_grpc(ctx, conn)
    return ctx.result


def worker_main(conn: Connection, worker: int) -> None:
    """Entry point of a load process: run jobs until told to stop (None) or the pipe closes."""
    # Ctrl-C reaches the whole process group: the benchmark process decides, not us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        spec, workers = message
        try:
            result = uvloop.run(_job(spec, worker, workers, conn))
        except Exception as exc:  # reported to the benchmark, which stops the run
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("done", result))
