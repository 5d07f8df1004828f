"""Services as real processes for the reliability tests: ``python -m services.logs``, its JSON log."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.e2e.support import SECRET
from tests.logins import login_url


class Service:
    """``python -m services.logs`` with the given workers; its JSON log lines as they come."""

    def __init__(self, url: str, data_dir: Path, *, workers: str = "1", port: int = 0, **settings: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
        # The service's own login, never the admin URL the fixtures made the database with.
        env.update(AOS_LOGS_DATABASE_URL=login_url(url, "logs"), AOS_WORKERS=workers, AOS_LOGS_PORT=str(port), AOS_DATA_DIR=str(data_dir),
                   AOS_AUTH_JWT_SECRET=SECRET, AOS_DEV_KEYS="true", AOS_MIGRATE_ON_START="false", AOS_LOG_LEVEL="INFO",
                   AOS_GRACE_PERIOD_S="30", PYTHONUNBUFFERED="1", **settings)
        self.process = subprocess.Popen([sys.executable, "-m", "services.logs"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            try:
                self.lines.append(json.loads(line))
            except ValueError:  # a traceback or other non-JSON output
                self.lines.append({"msg": line.rstrip()})

    def wait_for(self, msg: str, count: int = 1, timeout: float = 30, **fields) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in list(self.lines)
                     if line.get("msg") == msg and all(line.get(k) == v for k, v in fields.items())]
            if len(found) >= count:
                return found
            # The log ends when the process has exited and every line of it has been read.
            ended = not self._reader.is_alive()
            assert time.monotonic() < deadline and not ended, f"no {count} × {msg!r} {fields} in: {self.lines}"
            time.sleep(0.05)

    def address(self) -> str:
        """Where it listens (one worker), once it does."""
        (listening,) = self.wait_for("listening")
        return listening["address"]

    def start_workers(self, n: int) -> tuple[str, list[int]]:
        """(address, worker pids) once every worker listens."""
        (started,) = self.wait_for("workers started")
        listening = self.wait_for("listening", count=n)
        assert {line["address"] for line in listening} == {started["address"]}, "every worker on one port"
        assert sorted(line["pid"] for line in listening) == sorted(started["pids"])
        assert not started["address"].endswith(":0")
        return started["address"], started["pids"]

    def wait(self, timeout: float) -> int:
        """The exit code, once every line of the log has been read."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
