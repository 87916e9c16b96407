"""Helpers for integration tests: the consumer as a real OS process, waiting, reading back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def consumer_env(
    *,
    bootstrap_servers: str,
    base_url: str,
    api_key: str,
    topic: str,
    group_id: str,
    dead_letter_topic: str,
    **extra: str,
) -> dict[str, str]:
    """Environment for ``python -m consumer run`` against the test broker and emulator."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KAFKA_", "KLAVIYO_", "SCHEMA_REGISTRY"))
    }
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "KLAVIYO_BASE_URL": base_url,
            "KLAVIYO_API_KEY": api_key,
            "KAFKA_KLAVIYO_KAFKA__TOPICS": topic,
            "KAFKA_KLAVIYO_KAFKA__GROUP_ID": group_id,
            "KAFKA_KLAVIYO_KAFKA__DEAD_LETTER_TOPIC": dead_letter_topic,
            "KAFKA_KLAVIYO_BATCH__LINGER_MS": "100",
            "KAFKA_KLAVIYO_KAFKA__COMMIT_INTERVAL_MS": "200",
            "KAFKA_KLAVIYO_DELIVERY__BACKOFF_MAX_S": "2",
        }
    )
    env.update(extra)
    return env


class ConsumerProcess:
    """``python -m consumer run`` in its own process, its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, command: str = "run") -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumer", command],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL: no drain, no commit."""
        self.process.kill()
        self.process.wait(10)
        self._log.close()

    def wait(self, timeout_s: float) -> int:
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"consumer did not exit within {timeout_s:.0f}s:\n{self.output()}"
            ) from None
        finally:
            self._log.close()
        return code

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> ConsumerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.kill()
