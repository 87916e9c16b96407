"""A real single-node Apache Kafka broker (KRaft mode) for tests and the demo.

No Docker is needed: the broker's jars come from Maven Central (``mvn
dependency:copy-dependencies`` into a cache folder, once), and the broker runs as a child
JVM bound to 127.0.0.1 on free ports::

    with LocalKafka() as kafka:
        kafka.create_topic("orders", partitions=3)
        producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})

The JVM is started in its own process group, asked to die with its parent (Linux
``PR_SET_PDEATHSIG``) and stopped at interpreter exit, so a crashed test run does not leave
brokers behind.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from kafka_klaviyo_dev.errors import DevstackError

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "LocalKafka",
    "default_cache_dir",
    "ensure_kafka_jars",
    "require_tools",
]

DEFAULT_KAFKA_VERSION = "4.4.0"
"""Version of ``org.apache.kafka:kafka_2.13`` the devstack runs by default."""

MIN_JAVA_VERSION = 17

_INSTALL_HINT = (
    "install a JDK 17+ and Maven and put `java` and `mvn` on PATH "
    "(Debian/Ubuntu: `sudo apt-get install -y openjdk-17-jdk-headless maven`; "
    "macOS: `brew install openjdk@17 maven`)"
)

# Marker written after mvn succeeded: its absence means the lib folder is incomplete.
_MARKER = ".complete"

# Pinned so the build does not depend on whichever plugin version the local Maven defaults to.
_DEPENDENCY_PLUGIN_VERSION = "3.8.1"

# kafka_2.13's pom brings slf4j-api 1.7 and log4j-core but no binding between them (the
# release tarball adds one), so without this the broker would silently log nothing.
_LOG4J_SLF4J_VERSION = "2.25.5"

_POM_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0
                             https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kafka-klaviyo.devstack</groupId>
  <artifactId>local-kafka</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j_version}</version>
    </dependency>
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>{plugin_version}</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
"""

_LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by kafka_klaviyo_dev.kafka: WARN and up, plus the "Kafka Server started" line. -->
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN">
      <AppenderRef ref="STDOUT"/>
    </Root>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
  </Loggers>
</Configuration>
"""

_log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Return ``$KAFKA_KLAVIYO_CACHE`` or ``~/.cache/kafka-klaviyo``."""
    env = os.environ.get("KAFKA_KLAVIYO_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "kafka-klaviyo"


def _java_major_version(java: str) -> int | None:
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older report themselves as 1.x.
    if major == 1 and match.group(2) is not None:
        major = int(match.group(2))
    return major


def require_tools() -> None:
    """Raise :class:`DevstackError` unless Java 17+ and Maven are on PATH."""
    java = shutil.which("java")
    if java is None:
        raise DevstackError(f"`java` not found on PATH: {_INSTALL_HINT}")
    major = _java_major_version(java)
    if major is None or major < MIN_JAVA_VERSION:
        found = "an unknown version" if major is None else f"Java {major}"
        raise DevstackError(
            f"`java` on PATH is {found}, Kafka 4 needs Java {MIN_JAVA_VERSION}+: {_INSTALL_HINT}"
        )
    if shutil.which("mvn") is None:
        raise DevstackError(f"`mvn` not found on PATH: {_INSTALL_HINT}")


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _tail(text: str, lines: int = 40) -> str:
    # Maven 3.8 colours some lines even in batch mode.
    clean = _ANSI_ESCAPE.sub("", text)
    kept = [line for line in clean.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _read_tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_bytes()[-64_000:]
    except OSError:
        return "(no log)"
    return _tail(data.decode("utf-8", errors="replace"), lines)


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def ensure_kafka_jars(version: str = DEFAULT_KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """Download the broker's jars once and return the folder holding them.

    The jars land in ``<cache_dir>/kafka-<version>/lib``. A marker file is written only
    after Maven succeeded, so an interrupted download is redone on the next call; an
    exclusive ``fcntl`` lock makes concurrent callers (pytest-xdist workers, two terminals)
    wait for one download instead of racing it.
    """
    base = (cache_dir if cache_dir is not None else default_cache_dir()) / f"kafka-{version}"
    lib = base / "lib"
    marker = base / _MARKER
    if marker.is_file():
        return lib

    require_tools()
    base.mkdir(parents=True, exist_ok=True)
    with (base / ".lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            # Another process may have finished the download while we waited for the lock.
            if marker.is_file():
                return lib
            _download_jars(version, base, lib)
            marker.write_text(f"org.apache.kafka:kafka_2.13:{version}\n")
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return lib


def _download_jars(version: str, base: Path, lib: Path) -> None:
    if lib.exists():
        shutil.rmtree(lib)
    pom = base / "pom.xml"
    pom.write_text(
        _POM_TEMPLATE.format(
            version=version,
            log4j_version=_LOG4J_SLF4J_VERSION,
            plugin_version=_DEPENDENCY_PLUGIN_VERSION,
        )
    )
    cmd = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={lib}",
        "-DincludeScope=runtime",
        "-Dstyle.color=never",
        # Otherwise a failed download (e.g. network down) is cached in ~/.m2 and not
        # retried for a day.
        "-U",
    ]
    _log.info("downloading Apache Kafka %s jars into %s", version, lib)
    try:
        proc = subprocess.run(
            cmd, cwd=base, capture_output=True, text=True, timeout=1800, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise DevstackError(f"mvn did not finish downloading Kafka {version} in 30 min") from exc
    except OSError as exc:
        raise DevstackError(f"could not run mvn: {exc}") from exc
    if proc.returncode != 0:
        raise DevstackError(
            f"mvn could not fetch org.apache.kafka:kafka_2.13:{version} "
            f"(exit {proc.returncode}):\n{_tail(proc.stdout + proc.stderr)}"
        )
    if not any(lib.glob("kafka_2.13-*.jar")):
        raise DevstackError(f"mvn succeeded but {lib} holds no kafka_2.13 jar")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _random_cluster_id() -> str:
    # Kafka's Uuid.toString(): URL-safe base64 without padding; it never hands out ids
    # starting with "-" because the CLI would read them as options.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


_PR_SET_PDEATHSIG = 1


def _death_signal_preexec() -> Callable[[], None] | None:
    """Make the child get SIGKILL when this process dies, even by SIGKILL (Linux only).

    The kernel ties the signal to the *thread* that forked, so it is only safe from the
    main thread: a worker thread that ends would take the broker with it.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl; then nobody would signal us.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


# A freshly picked port can be taken by someone else before the JVM binds it.
_PORT_ATTEMPTS = 3

# Must match offsets.topic.num.partitions in the broker config below.
_OFFSETS_PARTITIONS = 3


def _group_partition(group: str, partitions: int) -> int:
    """The __consumer_offsets partition of ``group``: Kafka's Utils.abs(hashCode) % n."""
    data = group.encode("utf-16-be")  # Java hashes UTF-16 code units
    code = 0
    for i in range(0, len(data), 2):
        code = (31 * code + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    signed = code - (1 << 32) if code & 0x80000000 else code
    return (0 if signed == -(1 << 31) else abs(signed)) % partitions


def _warmup_groups(partitions: int) -> tuple[str, ...]:
    """One group name per __consumer_offsets partition, so every coordinator is probed."""
    by_partition: dict[int, str] = {}
    i = 0
    while len(by_partition) < partitions:
        name = f"kafka-klaviyo-devstack-probe-{i}"
        by_partition.setdefault(_group_partition(name, partitions), name)
        i += 1
    return tuple(by_partition[p] for p in range(partitions))


_WARMUP_GROUPS = _warmup_groups(_OFFSETS_PARTITIONS)

_COORDINATOR_NOT_READY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError.REQUEST_TIMED_OUT,
    }
)

_RUNNING: set[LocalKafka] = set()


@atexit.register
def _stop_all_at_exit() -> None:
    for broker in list(_RUNNING):
        with contextlib.suppress(Exception):
            broker.stop(timeout=10.0)


class LocalKafka:
    """One Apache Kafka broker+controller (KRaft) on 127.0.0.1, run as a child JVM.

    Ports are chosen on the first :meth:`start` and kept for the object's life, so
    :meth:`restart` brings the broker back at the same address with the same data dir
    (topics and committed offsets survive). Without ``work_dir`` a temp dir is used and
    removed by :meth:`stop`.
    """

    def __init__(
        self,
        *,
        version: str = DEFAULT_KAFKA_VERSION,
        cache_dir: Path | None = None,
        work_dir: Path | None = None,
        heap: str = "512m",
    ) -> None:
        self.version = version
        self.heap = heap
        self._cache_dir = cache_dir
        self._given_work_dir = work_dir
        self._work_dir: Path | None = work_dir
        self._broker_port: int | None = None
        self._controller_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: AdminClient | None = None

    # -- properties -------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>`` of the PLAINTEXT listener; valid once started."""
        if self._broker_port is None:
            raise DevstackError("LocalKafka has not been started")
        return f"127.0.0.1:{self._broker_port}"

    @property
    def pid(self) -> int | None:
        """Process id of the broker JVM, or ``None`` when it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def work_dir(self) -> Path:
        """Folder with ``server.properties``, ``log4j2.xml``, ``broker.log`` and ``data/``."""
        if self._work_dir is None:
            raise DevstackError("LocalKafka has not been started")
        return self._work_dir

    @property
    def log_path(self) -> Path:
        """The broker's combined stdout/stderr/log4j output."""
        return self.work_dir / "broker.log"

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """Start the broker; return once an AdminClient gets metadata and group coordinators answer.

        Downloads the jars on first use and formats the KRaft storage when the data dir
        is new. A no-op while running. Raises :class:`DevstackError` with the log tail on
        timeout or early exit.
        """
        if self.pid is not None:
            return
        deadline = time.monotonic() + timeout
        lib = ensure_kafka_jars(self.version, self._cache_dir)
        require_tools()
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="kafka-klaviyo-broker-"))
        self._work_dir.mkdir(parents=True, exist_ok=True)

        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if self._broker_port is None or self._controller_port is None:
                self._broker_port = _free_port()
                self._controller_port = _free_port()
                while self._controller_port == self._broker_port:
                    self._controller_port = _free_port()
            props = self._write_config()
            fresh = not (self._data_dir / "meta.properties").is_file()
            if fresh:
                self._format_storage(lib, props, deadline)
            log_offset = self._launch(lib, props)
            try:
                self._wait_ready(deadline)
                return
            except DevstackError:
                # Another process can grab a "free" port before the JVM binds it. A fresh
                # cluster may move (the controller port is baked into the formatted
                # storage, so wipe it); a restart must keep its address and cannot.
                lost_race = self._proc is None and "Address already in use" in _read_from(
                    self.log_path, log_offset
                )
                if not (fresh and lost_race and attempt < _PORT_ATTEMPTS):
                    raise
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._close_admin()  # it is bound to the old address
            self._broker_port = None
            self._controller_port = None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the broker, SIGKILL it after ``timeout``; safe to call repeatedly.

        Removes the work dir when it was a temp dir this object created.
        """
        self._stop_process(timeout)
        if self._given_work_dir is None and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
            # A fresh temp dir means a fresh cluster; new ports avoid clashing with clients
            # that still cache the old cluster's metadata.
            self._broker_port = None
            self._controller_port = None

    def kill(self) -> None:
        """SIGKILL the broker immediately (crash fault tests); the data dir is kept."""
        proc = self._proc
        self._close_admin()
        if proc is None:
            return
        # Only signal a live child: once reaped, its pid may belong to someone else.
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGKILL)
            proc.wait()
        self._proc = None
        _RUNNING.discard(self)

    def restart(self, timeout: float = 120.0) -> None:
        """Stop (gracefully) and start again on the same ports with the same data dir."""
        self._stop_process(timeout=30.0)
        self.start(timeout=timeout)

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- admin ------------------------------------------------------------------------

    def create_topic(
        self, name: str, partitions: int = 1, config: dict[str, str] | None = None
    ) -> None:
        """Create ``name`` (replication factor 1) and wait until every partition has a leader.

        An existing topic is fine, whatever its partition count.
        """
        admin = self._admin_client()
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        future = admin.create_topics([topic], operation_timeout=30, request_timeout=30)[name]
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise DevstackError(f"could not create topic {name!r}: {exc}") from exc
        self._wait_topic_ready(name, deadline=time.monotonic() + 30)

    # -- internals --------------------------------------------------------------------

    @property
    def _data_dir(self) -> Path:
        return self.work_dir / "data"

    def _write_config(self) -> Path:
        work = self.work_dir
        props = work / "server.properties"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self._controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self._broker_port},"
                f"CONTROLLER://127.0.0.1:{self._controller_port}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://127.0.0.1:{self._broker_port},"
                f"CONTROLLER://127.0.0.1:{self._controller_port}"
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self._data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "true",
            # Internal topics must fit on one node, and few partitions load fast.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": str(_OFFSETS_PARTITIONS),
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Tests start consumers one at a time; waiting 3 s for more members is waste.
            "group.initial.rebalance.delay.ms": "0",
            # After a SIGKILL the controller keeps the dead broker's registration until its
            # session times out (9 s by default) and refuses the restarted broker meanwhile.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        props.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (work / "log4j2.xml").write_text(_LOG4J2_XML)
        return props

    def _jvm(self, lib: Path, main: str, heap: str, *extra: str) -> list[str]:
        return [
            "java",
            f"-Xmx{heap}",
            "-XX:+ExitOnOutOfMemoryError",
            *extra,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.xml'}",
            # Loggers created during JVM shutdown would otherwise print a warning about it.
            "-Dlog4j2.shutdownHookEnabled=false",
            "-cp",
            f"{lib}{os.sep}*",
            main,
        ]

    def _format_storage(self, lib: Path, props: Path, deadline: float) -> None:
        cmd = [
            # A one-shot tool: skipping the optimising JIT saves about a third of its runtime.
            *self._jvm(
                lib,
                "kafka.tools.StorageTool",
                "256m",
                "-XX:TieredStopAtLevel=1",
                "-XX:+UseSerialGC",
            ),
            "format",
            "--standalone",
            "-t",
            _random_cluster_id(),
            "-c",
            str(props),
        ]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=max(deadline - time.monotonic(), 1.0),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevstackError("formatting the KRaft storage timed out") from exc
        with self.log_path.open("a") as log:
            log.write(f"===== kafka.tools.StorageTool format =====\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            raise DevstackError(
                f"formatting the KRaft storage failed (exit {proc.returncode}):\n"
                f"{_tail(proc.stdout + proc.stderr)}"
            )

    def _launch(self, lib: Path, props: Path) -> int:
        """Start the JVM; return the broker.log offset where its output begins."""
        cmd = [*self._jvm(lib, "kafka.Kafka", self.heap), str(props)]
        with self.log_path.open("ab") as log:
            offset = log.tell()
            log.write(f"\n===== starting broker at {time.strftime('%F %T')} =====\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                # Own process group: a terminal's Ctrl-C reaches us first, and we can
                # signal the JVM and anything it spawned together.
                start_new_session=True,
                preexec_fn=_death_signal_preexec(),
            )
        _RUNNING.add(self)
        return offset

    def _wait_ready(self, deadline: float) -> None:
        assert self._broker_port is not None
        # Wait for the socket first: librdkafka logs every refused connection otherwise.
        while not _port_open(self._broker_port):
            self._check_alive_or_timeout(deadline)
            time.sleep(0.1)
        last_error = ""
        while True:
            self._check_alive_or_timeout(deadline, last_error)
            try:
                metadata = self._admin_client().list_topics(timeout=2.0)
                if metadata.brokers:
                    break
            except KafkaException as exc:
                last_error = str(exc)
            time.sleep(0.1)
        self._wait_group_coordinators(deadline)

    def _wait_group_coordinators(self, deadline: float) -> None:
        # The first FindCoordinator creates __consumer_offsets and every start reloads it;
        # until then consumers stall seconds in JoinGroup and committed() fails. Waiting here
        # makes "started" mean "consumer groups work", which restart fault tests rely on.
        admin = self._admin_client()
        pending = list(_WARMUP_GROUPS)
        last_error = ""
        while pending:
            self._check_alive_or_timeout(deadline, last_error)
            futures = admin.describe_consumer_groups(pending, request_timeout=10)
            for group, future in futures.items():
                try:
                    future.result()
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, KafkaError) and err.code() in _COORDINATOR_NOT_READY:
                        last_error = str(exc)
                        continue
                # An answer, even "no such group", means this partition's coordinator is up.
                pending.remove(group)
            if pending:
                time.sleep(0.1)

    def _check_alive_or_timeout(self, deadline: float, last_error: str = "") -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            self._proc = None
            _RUNNING.discard(self)
            raise DevstackError(
                f"Kafka broker exited early (exit {code}); {self.log_path}:\n"
                f"{_read_tail(self.log_path)}"
            )
        if time.monotonic() > deadline:
            self._stop_process(timeout=10.0)
            detail = f" (last AdminClient error: {last_error})" if last_error else ""
            raise DevstackError(
                f"Kafka broker did not answer within the start timeout{detail}; "
                f"{self.log_path}:\n{_read_tail(self.log_path)}"
            )

    def _wait_topic_ready(self, name: str, deadline: float) -> None:
        admin = self._admin_client()
        while True:
            try:
                topic = admin.list_topics(topic=name, timeout=5.0).topics.get(name)
                if (
                    topic is not None
                    and topic.error is None
                    and topic.partitions
                    and all(p.leader >= 0 for p in topic.partitions.values())
                ):
                    return
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise DevstackError(f"topic {name!r} has no leader after creation")
            time.sleep(0.1)

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(
                {"bootstrap.servers": self.bootstrap_servers},
                # librdkafka would print every reconnect during restarts to stderr.
                logger=logging.getLogger(f"{__name__}.librdkafka"),
            )
        return self._admin

    def _close_admin(self) -> None:
        # AdminClient has no close(); dropping the reference lets librdkafka shut down.
        self._admin = None

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def _stop_process(self, timeout: float) -> None:
        proc = self._proc
        self._close_admin()
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait()
        self._proc = None
        _RUNNING.discard(self)
