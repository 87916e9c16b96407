"""A real Schema Registry with Confluent's REST API, for tests and the demo: Apicurio Registry.

No Docker is needed: Apicurio's prebuilt server (``io.apicurio:apicurio-registry-app``, a
Quarkus runner jar) comes from Maven Central (``mvn dependency:unpack`` into a cache folder,
once) and runs as a child JVM bound to 127.0.0.1 on a free port, with in-memory storage::

    with LocalRegistry() as registry:
        client = SchemaRegistryClient({"url": registry.url})   # .../apis/ccompat/v7

Like :class:`~kafka_klaviyo_dev.kafka.LocalKafka`, the JVM runs in its own process group, is
asked to die with its parent and is stopped at interpreter exit. :meth:`LocalRegistry.stop`,
:meth:`~LocalRegistry.kill`, :meth:`~LocalRegistry.restart`, :meth:`~LocalRegistry.pause` and
:meth:`~LocalRegistry.resume` are there for fault tests. Storage is in memory by default: a
restarted registry is empty (and answers 404 for every id it handed out before, which a
consumer takes for bad data); ``persistent=True`` keeps it in an H2 file in the work dir, so a
restart behaves like a production registry's, schemas and ids intact.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from kafka_klaviyo_dev.errors import DevstackError

# One discipline for every devstack JVM: the broker's helpers for ports, logs and signals.
from kafka_klaviyo_dev.kafka import (
    _INSTALL_HINT,
    _death_signal_preexec,
    _free_port,
    _java_major_version,
    _read_from,
    _read_tail,
    _tail,
    default_cache_dir,
)

__all__ = [
    "CCOMPAT_PATH",
    "DEFAULT_REGISTRY_VERSION",
    "LocalRegistry",
    "ensure_registry_app",
    "require_registry_tools",
]

DEFAULT_REGISTRY_VERSION = "2.6.13.Final"
"""Version of ``io.apicurio:apicurio-registry-app`` the devstack runs by default.

2.6 runs on Java 17; Apicurio 3.x needs Java 21, which Debian 12 does not package.
"""

CCOMPAT_PATH = "/apis/ccompat/v7"
"""Where Apicurio serves Confluent's Schema Registry API (the URL Confluent clients take)."""

MIN_JAVA_VERSION = 17

_MARKER = ".complete"
_DEPENDENCY_PLUGIN_VERSION = "3.8.1"
_PORT_ATTEMPTS = 3

_log = logging.getLogger(__name__)


def require_registry_tools() -> None:
    """Raise :class:`DevstackError` unless Java 17+ and Maven are on PATH."""
    java = shutil.which("java")
    if java is None:
        raise DevstackError(f"`java` not found on PATH: {_INSTALL_HINT}")
    major = _java_major_version(java)
    if major is None or major < MIN_JAVA_VERSION:
        found = "an unknown version" if major is None else f"Java {major}"
        raise DevstackError(
            f"`java` on PATH is {found}, Apicurio Registry needs Java {MIN_JAVA_VERSION}+: "
            f"{_INSTALL_HINT}"
        )
    if shutil.which("mvn") is None:
        raise DevstackError(f"`mvn` not found on PATH: {_INSTALL_HINT}")


def _runner_jar(app: Path, version: str) -> Path:
    return app / f"apicurio-registry-app-{version}-runner.jar"


def ensure_registry_app(
    version: str = DEFAULT_REGISTRY_VERSION, cache_dir: Path | None = None
) -> Path:
    """Download and unpack Apicurio Registry once; return its runner jar.

    It lands in ``<cache_dir>/apicurio-registry-<version>/app``. As for the broker's jars, a
    marker written after Maven succeeded makes an interrupted download start over, and an
    ``fcntl`` lock makes concurrent callers wait for one download.
    """
    base = (cache_dir if cache_dir is not None else default_cache_dir()) / (
        f"apicurio-registry-{version}"
    )
    app = base / "app"
    jar = _runner_jar(app, version)
    marker = base / _MARKER
    if marker.is_file():
        return jar

    require_registry_tools()
    base.mkdir(parents=True, exist_ok=True)
    with (base / ".lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if marker.is_file():
                return jar
            _download(version, base, app)
            if not jar.is_file():
                raise DevstackError(f"mvn succeeded but {app} holds no {jar.name}")
            marker.write_text(f"io.apicurio:apicurio-registry-app:{version}:tar.gz:all\n")
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return jar


def _download(version: str, base: Path, app: Path) -> None:
    if app.exists():
        shutil.rmtree(app)
    cmd = [
        "mvn",
        "-B",
        "-q",
        f"org.apache.maven.plugins:maven-dependency-plugin:{_DEPENDENCY_PLUGIN_VERSION}:unpack",
        f"-Dartifact=io.apicurio:apicurio-registry-app:{version}:tar.gz:all",
        f"-DoutputDirectory={app}",
        "-Dstyle.color=never",
        # Otherwise a failed download is cached in ~/.m2 and not retried for a day.
        "-U",
    ]
    _log.info("downloading Apicurio Registry %s into %s", version, app)
    try:
        proc = subprocess.run(
            cmd, cwd=base, capture_output=True, text=True, timeout=1800, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise DevstackError(
            f"mvn did not finish downloading Apicurio Registry {version} in 30 min"
        ) from exc
    except OSError as exc:
        raise DevstackError(f"could not run mvn: {exc}") from exc
    if proc.returncode != 0:
        raise DevstackError(
            f"mvn could not fetch io.apicurio:apicurio-registry-app:{version} "
            f"(exit {proc.returncode}):\n{_tail(proc.stdout + proc.stderr)}"
        )


_RUNNING: set[LocalRegistry] = set()


@atexit.register
def _stop_all_at_exit() -> None:
    for registry in list(_RUNNING):
        with contextlib.suppress(Exception):
            registry.stop(timeout=10.0)


class LocalRegistry:
    """One Apicurio Registry on 127.0.0.1, in-memory, run as a child JVM.

    The port (``port``, or a free one chosen on the first :meth:`start`) is kept for the
    object's life, so a consumer configured with :attr:`url` reaches the registry again after
    :meth:`restart`.
    In memory (the default) it comes back empty; with ``persistent`` its H2 database in
    ``<work_dir>/data`` survives restarts. Without ``work_dir`` a temp dir holds
    ``registry.log`` (and the data) and is removed by :meth:`stop`.
    """

    def __init__(
        self,
        *,
        version: str = DEFAULT_REGISTRY_VERSION,
        cache_dir: Path | None = None,
        work_dir: Path | None = None,
        heap: str = "256m",
        persistent: bool = False,
        port: int | None = None,
    ) -> None:
        self.version = version
        self.heap = heap
        self.persistent = persistent
        self._cache_dir = cache_dir
        self._given_work_dir = work_dir
        self._work_dir: Path | None = work_dir
        self._port: int | None = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._paused = False

    # -- properties -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``; valid once started."""
        if self._port is None:
            raise DevstackError("LocalRegistry has not been started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API's URL, for ``schema.registry.url`` settings."""
        return self.base_url + CCOMPAT_PATH

    @property
    def pid(self) -> int | None:
        """Process id of the registry JVM, or ``None`` when it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def work_dir(self) -> Path:
        """Folder holding ``registry.log``."""
        if self._work_dir is None:
            raise DevstackError("LocalRegistry has not been started")
        return self._work_dir

    @property
    def log_path(self) -> Path:
        """The registry's combined stdout/stderr (Quarkus logs to the console)."""
        return self.work_dir / "registry.log"

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 120.0, *, wait: bool = True) -> None:
        """Start the registry; return once ``GET /apis/ccompat/v7/subjects`` answers 200.

        Downloads the server on first use. A no-op while running. Raises
        :class:`DevstackError` with the log tail on timeout or early exit. With ``wait=False``
        only the JVM is launched (it boots while the caller starts other things); then call
        :meth:`wait_ready`.
        """
        if self.pid is not None:
            return
        deadline = time.monotonic() + timeout
        jar = ensure_registry_app(self.version, self._cache_dir)
        require_registry_tools()
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="kafka-klaviyo-registry-"))
        self._work_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            fresh = self._port is None
            if self._port is None:
                self._port = _free_port()
            log_offset = self._launch(jar)
            if not wait:
                return
            try:
                self._wait_ready(deadline, log_offset)
                return
            except DevstackError:
                # Someone may have taken the "free" port before the JVM bound it. A first
                # start may move to another one; a restart must keep its address.
                output = _read_from(self.log_path, log_offset)
                lost_race = self._proc is None and f"Port {self._port} seems to be in use" in output
                if not (fresh and lost_race and attempt < _PORT_ATTEMPTS):
                    raise
            self._port = None

    def wait_ready(self, timeout: float = 120.0) -> None:
        """After ``start(wait=False)``: return once the registry answers (as :meth:`start`)."""
        self._running()
        self._wait_ready(time.monotonic() + timeout, self._log_offset)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the registry, SIGKILL it after ``timeout``; safe to call repeatedly.

        Removes the work dir when it was a temp dir this object created; the port is kept,
        so a later :meth:`start` comes back at the same :attr:`url` (outage tests).
        """
        self._stop_process(timeout)
        if self._given_work_dir is None and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def kill(self) -> None:
        """SIGKILL the registry immediately (crash fault tests); the port is kept."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self._forget()

    def restart(self, timeout: float = 120.0) -> None:
        """Stop (gracefully) and start again on the same port, with empty storage."""
        self._stop_process(timeout=30.0)
        self.start(timeout=timeout)

    def pause(self) -> None:
        """SIGSTOP the JVM: connections are still accepted by the kernel but never answered,
        the slow kind of outage (clients wait for their timeout)."""
        proc = self._running()
        _signal_group(proc, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`; the registry answers again with its data intact."""
        proc = self._running()
        _signal_group(proc, signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------

    def _running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise DevstackError("the Schema Registry is not running")
        return proc

    def _command(self, jar: Path) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            # A test registry serves a handful of schemas: the C1 JIT alone starts faster and
            # the serial collector keeps the footprint small.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={self._port}",
            # 2.6 opens no management interface; 3.x would on 0.0.0.0:9000 without these.
            "-Dquarkus.management.host=127.0.0.1",
            "-Dquarkus.management.port=0",
            *self._storage(),
            "-Dquarkus.banner.enabled=false",
            "-Dquarkus.log.console.color=false",
            "-jar",
            str(jar),
        ]

    def _storage(self) -> list[str]:
        if not self.persistent:
            return []  # Apicurio's default: jdbc:h2:mem:registry_db
        return [f"-Dquarkus.datasource.jdbc.url=jdbc:h2:file:{self.work_dir / 'data' / 'registry'}"]

    def _launch(self, jar: Path) -> int:
        """Start the JVM; return the registry.log offset where its output begins."""
        with self.log_path.open("ab") as log:
            offset = log.tell()
            log.write(f"\n===== starting registry at {time.strftime('%F %T')} =====\n".encode())
            log.flush()
            self._log_offset = offset
            self._proc = subprocess.Popen(
                self._command(jar),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                start_new_session=True,
                preexec_fn=_death_signal_preexec(),
            )
        self._paused = False
        _RUNNING.add(self)
        return offset

    def _wait_ready(self, deadline: float, log_offset: int) -> None:
        url = self.url + "/subjects"
        # An answer alone could come from whoever else holds the port; Quarkus logs this
        # line once our JVM has bound it.
        bound = f"Listening on: {self.base_url}"
        last_error = ""
        with httpx.Client(timeout=2.0) as http:
            while True:
                self._check_alive_or_timeout(deadline, last_error)
                if bound not in _read_from(self.log_path, log_offset):
                    last_error = "not listening yet"
                    time.sleep(0.1)
                    continue
                try:
                    response = http.get(url)
                except httpx.HTTPError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        return
                    last_error = f"HTTP {response.status_code}"
                time.sleep(0.1)

    def _check_alive_or_timeout(self, deadline: float, last_error: str) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            self._forget()
            raise DevstackError(
                f"Schema Registry exited early (exit {code}); {self.log_path}:\n"
                f"{_read_tail(self.log_path)}"
            )
        if time.monotonic() > deadline:
            self._stop_process(timeout=10.0)
            detail = f" (last answer: {last_error})" if last_error else ""
            raise DevstackError(
                f"Schema Registry did not answer within the start timeout{detail}; "
                f"{self.log_path}:\n{_read_tail(self.log_path)}"
            )

    def _stop_process(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                # A stopped JVM would never act on SIGTERM.
                _signal_group(proc, signal.SIGCONT)
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self._forget()

    def _forget(self) -> None:
        self._proc = None
        self._paused = False
        _RUNNING.discard(self)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Only a live child: once reaped, its pid may belong to someone else.
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
