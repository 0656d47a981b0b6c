"""Start or stop a throwaway PostgreSQL server for the registry benchmark (Debian's `postgresql` package).

    python bench/registry_postgres.py start /tmp/registry-bench/pg 55432   # prints the database URL
    python bench/registry_postgres.py stop /tmp/registry-bench/pg

Runs as the `postgres` user when started as root (PostgreSQL refuses root), on loopback only, with
a larger shared_buffers than the default 128 MB so the 1M-style working set stays in memory.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

SETTINGS = "-c shared_buffers=2GB -c work_mem=64MB -c maintenance_work_mem=1GB -c max_wal_size=8GB"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        sys.exit("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin; apt-get install postgresql")
    return found[-1]


def _run(args: list[str]) -> None:
    if os.geteuid() == 0:
        args = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)]
    subprocess.run(args, check=True)


def start(data_dir: Path, port: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres", "postgres")
    if not (data_dir / "PG_VERSION").exists():
        _run([_bin("initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8"])
    options = f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 {SETTINGS}"
    _run([_bin("pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(data_dir / "log"), "-w", "start"])
    _run([_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "bench"])
    print(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/bench")


def stop(data_dir: Path) -> None:
    _run([_bin("pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"])


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    if sys.argv[1] == "start":
        start(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 55432)
    else:
        stop(Path(sys.argv[2]))
