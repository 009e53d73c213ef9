"""Engines the infrastructure checks run next to the private Postgres and Redis of the fault
scenarios (tests/faults/processes.py): PgBouncer, and a Redis Cluster. Each runs as a real
process on leased loopback ports, in its own temp directory, and is stopped by the Reaper.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from loadtests.ports import lease_port
from tests.faults.processes import Proc

READY_TIMEOUT_S = 20.0


async def wait_listening(port: int, proc: Proc, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until something accepts TCP connections on `port` (bounded; fails if `proc` died)."""
    started = time.monotonic()
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if not proc.alive() or time.monotonic() - started > timeout_s:
                raise AssertionError(proc.describe_exit()) from None
            await asyncio.sleep(0.05)


class PrivatePgBouncer:
    """PgBouncer in transaction mode in front of one database of `upstream_url`'s server,
    on a leased port, trusting the local `postgres` role as the upstream does."""

    def __init__(self, upstream_url: str, database: str, log_dir: Path, *,
                 pool_size: int = 20) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        assert Path(binary).exists(), "pgbouncer is not installed (apt-get install pgbouncer)"
        upstream = urlsplit(upstream_url)
        self.port = lease_port()
        self.database = database
        self.dir = Path(tempfile.mkdtemp(prefix="wallet-infra-pgbouncer-"))
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(f"""\
[databases]
{database} = host={upstream.hostname or '127.0.0.1'} port={upstream.port or 5432} dbname={database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 400
; asyncpg sends none of these, other drivers do: accepted and not passed on.
ignore_startup_parameters = extra_float_digits,options
server_reset_query =
query_wait_timeout = 10
server_login_retry = 1
""")
        argv = [binary, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            shutil.chown(self.dir, "postgres")
            for f in self.dir.iterdir():
                shutil.chown(f, "postgres")
            argv = [binary, "-u", "postgres", str(self.dir / "pgbouncer.ini")]
        self.proc = Proc("pgbouncer", argv, os.environ, log_dir / "pgbouncer.log")

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    async def start(self) -> None:
        self.proc.start()
        await wait_listening(self.port, self.proc)

    def kill(self) -> None:
        self.proc.kill()

    def destroy(self) -> None:
        self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """Six redis-server nodes in cluster mode on leased ports, joined as three primaries with
    a replica each (`redis-cli --cluster create`); no persistence."""

    NODES = 6

    def __init__(self, log_dir: Path) -> None:
        self.server = shutil.which("redis-server")
        self.cli = shutil.which("redis-cli")
        assert self.server and self.cli, "redis-server and redis-cli are needed"
        self.dir = Path(tempfile.mkdtemp(prefix="wallet-infra-redis-cluster-"))
        self.ports = [lease_port() for _ in range(self.NODES)]
        self.procs: dict[int, Proc] = {}
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            # The bus port is leased too: the default (port + 10000) lands in the kernel's
            # ephemeral range, where an outgoing connection may hold it.
            self.procs[port] = Proc(
                f"redis-{port}",
                [self.server, "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-port", str(lease_port()),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 # A dead primary is failed over after this long without an answer.
                 "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                 # A replica's first sync starts at once rather than after 5 s.
                 "--repl-diskless-sync-delay", "0",
                 "--dir", str(node_dir), "--daemonize", "no"],
                os.environ, log_dir / f"redis-{port}.log")

    @property
    def url(self) -> str:
        """The REDIS_URL form the services take for a cluster (docs/SCALING.md)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])

    async def start(self) -> None:
        for port, proc in self.procs.items():
            proc.start()
            await wait_listening(port, proc)
        created = await asyncio.to_thread(
            subprocess.run,
            [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stdout + created.stderr
        await self.wait_ok()
        await self.wait_replicas_synced()

    async def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node says cluster_state:ok."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = [await self.info(port) for port, proc in self.procs.items()
                      if proc.alive()]
            if states and all("cluster_state:ok" in s for s in states):
                return
            assert time.monotonic() < deadline, f"cluster not ok: {states[:1]}"
            await asyncio.sleep(0.2)

    async def wait_replicas_synced(self, timeout_s: float = 30.0) -> None:
        """Until every replica has finished its first sync: a replica that never had its
        primary's data refuses to take over from it (its data age counts from the epoch)."""
        deadline = time.monotonic() + timeout_s
        while True:
            links = [await self.info(port, "info", "replication") for port in self.ports]
            replicas = [s for s in links if "role:slave" in s]
            if len(replicas) == self.NODES // 2 and all(
                    "master_link_status:up" in s for s in replicas):
                return
            assert time.monotonic() < deadline, f"replicas not synced: {replicas}"
            await asyncio.sleep(0.2)

    async def info(self, port: int, *command: str) -> str:
        done = await asyncio.to_thread(
            subprocess.run, [self.cli, "-p", str(port), *(command or ("cluster", "info"))],
            capture_output=True, text=True, timeout=10)
        return done.stdout

    async def describe(self) -> str:
        """What a failed check needs to say why: each live node's view of the cluster and
        the tail of every node's log."""
        parts = []
        for port, proc in self.procs.items():
            if proc.alive():
                done = await asyncio.to_thread(
                    subprocess.run, [self.cli, "-p", str(port), "cluster", "nodes"],
                    capture_output=True, text=True, timeout=10)
                parts.append(f"--- {port} cluster nodes\n{done.stdout}")
            log = proc.log_path
            tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
            parts.append(f"--- {port} log ({'alive' if proc.alive() else 'dead'})\n"
                         + "\n".join(tail))
        return "\n".join(parts)

    def kill(self, port: int) -> None:
        self.procs[port].kill()

    def destroy(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
