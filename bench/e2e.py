"""End-to-end benchmarks of one ``kafka-klaviyo run`` process (``make bench``).

Three figures, each from one run on a local Kafka broker and the Klaviyo emulator, both real
and both in their own processes (on a 2-core machine an in-process emulator would share the
bench's GIL and distort the figures):

(a) ``a_e2e_*``: events per second from a pre-produced backlog into the emulator, rate limits
    off, from the moment ``python -m consumer run`` is spawned until the emulator holds every
    event (startup included; reported separately too), against the FLOOR measured in this
    process in the same run: decode + translate (with the translator ``run`` uses) +
    JSON-encode (item bytes and the assembled 1,000-event bodies) of the same messages, timed
    just before and just after the e2e run (the mean is the baseline). Target: ratio >= 0.7.
    Diagnostics to read it by: the consumer's CPU time per event against the floor's (what
    the consumer adds, whatever bounds the wall clock), split by thread; the emulator's own
    single-thread capacity for the same bodies (the other half of the machine's work); and
    how the machine's CPUs were shared during the run (consumer, emulator, broker, the rest).
(b) ``b_rate_limited_*``: the emulator enforcing Klaviyo's limits for Bulk Create Events (10/s
    burst, 150/min steady), delivered events per minute over two whole fixed rate-limit windows
    of the emulator (CLOCK_MONOTONIC is shared, so the windows can be aligned exactly); target
    >= 95% of 150,000/min; the share of requests answered 429 (target <= 1%) and the
    emulator's count of requests that ignored a Retry-After.
(c) ``c_peak_rss_mb``: the kernel's high-water mark (VmHWM) of the ``run`` process while it
    works through a backlog of 1,000,000 messages; target <= 300 MB.

Messages are OrderPlaced events in Avro single-object encoding, like the demo's: a thousand
order templates from :func:`kafka_klaviyo_dev.samples.generated_orders` are encoded once with
fixed-width placeholders, and each message patches a unique order id, a customer number and
that customer's phone number (one customer per two orders on average, so phone caches see
realistic hit rates) into the bytes: a million distinct messages take seconds, not minutes.
Customers use example.com addresses and the emulator runs with ``--drop-test-emails`` (real
Klaviyo accepts and drops them): every event is validated, deduplicated and counted, but the
emulator does not keep millions of records in memory.

    python -m bench.e2e             # the full run (about 9 minutes on 2 cores)
    python -m bench.e2e --quick     # a smoke run of each scenario (about 3 minutes)
    python -m bench.e2e --only a    # one scenario (a, b, c; comma-separated)

Figures go to ``bench-results.json`` (see :mod:`bench.common`); logs of the consumer and
emulator processes to ``.devstack/bench/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import REPO, Entry, print_table, record

ORDER_PLACED = "shop.events.OrderPlaced"
API_KEY = "pk_bench_local_emulator_key"
ACCOUNT = "bench"

# Fixed-width placeholders patched into the encoded templates. Avro strings are
# length-prefixed, so a same-length replacement keeps the bytes valid.
_ORDER_PLACEHOLDER = "Q7Z3X9K2W5"  # -> 10-digit message number
_CUSTOMER_PLACEHOLDER = "J4V8N6M1"  # -> 8-digit customer number
_PHONE_PLACEHOLDER = "P5H4N3"  # -> the customer number's last 6 digits
_TEMPLATES = 1000

PARTITIONS = 3
LOG_DIR = REPO / ".devstack" / "bench"

# Extra environment for the consumer per scenario, on top of its defaults
# (``--consumer-env KEY=VALUE`` adds to every scenario).
SCENARIO_ENV: dict[str, dict[str, str]] = {
    # Rate limits off: the emulator does not limit, so neither may the consumer.
    "a": {"KAFKA_KLAVIYO_DELIVERY__CLIENT_RATE_LIMIT": "false"},
    # The consumer's own limiter at Klaviyo's numbers (the default). It is stopped with a
    # backlog left: don't wait 30 s for in-flight batches that queue behind the limiter.
    "b": {"KAFKA_KLAVIYO_DELIVERY__SHUTDOWN_GRACE_S": "5"},
    "c": {
        "KAFKA_KLAVIYO_DELIVERY__CLIENT_RATE_LIMIT": "false",
        "KAFKA_KLAVIYO_DELIVERY__SHUTDOWN_GRACE_S": "5",
    },
}


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is; ``--quick`` shrinks everything."""

    a_orders: int = 150_000
    b_orders: int = 200_000
    b_windows: int = 2
    b_window_s: float = 60.0
    b_align: bool = True  # measure over the emulator's own fixed windows
    c_messages: int = 1_000_000
    c_max_s: float = 720.0
    quick: bool = False


FULL = Sizes()
QUICK = Sizes(
    a_orders=20_000,
    # One minute, not aligned with the emulator's windows: indicative only (the consumer's
    # sliding-log limiter makes any 60 s about equal, but a window edge can add a burst).
    b_orders=60_000,
    b_windows=1,
    b_align=False,
    c_messages=50_000,
    c_max_s=120.0,
    quick=True,
)


# -- messages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    value: bytes
    events: int


class OrderMessages:
    """Distinct OrderPlaced messages made cheaply from a few encoded templates."""

    def __init__(self, templates: int = _TEMPLATES) -> None:
        from consumer.schemas import SchemaCatalog
        from kafka_klaviyo_dev.encode import encode_single_object
        from kafka_klaviyo_dev.samples import generated_orders

        catalog = SchemaCatalog.load()
        self.templates: list[Template] = []
        for order in generated_orders(templates, seed=4242, prefix="tpl"):
            order["order_id"] = f"o{_ORDER_PLACEHOLDER}"
            for position, line in enumerate(order["line_items"], 1):
                line["line_id"] = f"o{_ORDER_PLACEHOLDER}-{position}"
            customer = order["customer"]
            first, last = customer["first_name"].lower(), customer["last_name"].lower()
            customer["customer_id"] = f"cust-{_CUSTOMER_PLACEHOLDER}"
            # example.com: real Klaviyo accepts and drops these, and so does the emulator with
            # --drop-test-emails, which keeps it from storing millions of records.
            customer["email"] = f"{first}.{last}.{_CUSTOMER_PLACEHOLDER}@example.com"
            # One number per customer, so phone caches see realistic hit rates.
            customer["phone"] = f"+1 617 8{_PHONE_PLACEHOLDER}"
            value = encode_single_object(catalog, ORDER_PLACED, order)
            assert value.count(_ORDER_PLACEHOLDER.encode()) == 1 + len(order["line_items"])
            self.templates.append(Template(value, 1 + len(order["line_items"])))
        self._order = _ORDER_PLACEHOLDER.encode()
        self._customer = _CUSTOMER_PLACEHOLDER.encode()
        self._phone = _PHONE_PLACEHOLDER.encode()

    def events(self, first: int, count: int) -> int:
        """Klaviyo events the messages ``first .. first+count-1`` produce."""
        per_template = [t.events for t in self.templates]
        n = len(per_template)
        full, rest = divmod(count, n)
        total = full * sum(per_template)
        return total + sum(per_template[(first + full * n + i) % n] for i in range(rest))

    def message(self, number: int, customers: int) -> tuple[bytes, bytes]:
        """(key, value) of message ``number``; keys are the order id, like a shop's."""
        template = self.templates[number % len(self.templates)].value
        order = b"%010d" % number
        customer = (number * 2_654_435_761) % customers
        value = (
            template.replace(self._order, order)
            .replace(self._customer, b"%08d" % customer)
            .replace(self._phone, b"%06d" % (customer % 1_000_000))
        )
        return b"o" + order, value

    def stream(self, first: int, count: int) -> Iterator[tuple[bytes, bytes]]:
        customers = max(1, count // 2)
        for number in range(first, first + count):
            yield self.message(number, customers)

    def values(self, first: int, count: int) -> list[bytes]:
        return [value for _, value in self.stream(first, count)]


def check_messages(messages: OrderMessages) -> None:
    """Patched messages decode to distinct, well-formed orders."""
    import phonenumbers

    from consumer.decode import Decoder
    from consumer.schemas import SchemaCatalog

    decoder = Decoder(SchemaCatalog.load())
    for number in (0, 1, 999, 1000, 123_456_789):
        _, value = messages.message(number, 500_000)
        order = decoder.decode(value).data
        assert order["order_id"] == f"o{number:010d}", order["order_id"]
        assert all(line["line_id"].startswith(order["order_id"]) for line in order["line_items"])
        customer = order["customer"]
        assert customer["email"].endswith("@example.com")
        assert phonenumbers.is_valid_number(phonenumbers.parse(customer["phone"], "US"))


# -- the floor: decode + translate + JSON-encode in this process --------------------------


@dataclass
class Floor:
    messages: int
    events: int
    wall_s: float
    cpu_s: float
    bodies: list[bytes]
    translator: str

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.events * 1e6


def run_translator(catalog: Any) -> tuple[Any, str]:
    """The translator ``run`` uses with default settings, and its name: the compiled
    translation rules, the packaged ones (before they existed: OrderTranslator)."""
    try:
        from consumer.rules import rules_from_settings
    except ImportError:
        from kafka_klaviyo_dev.handwritten import OrderTranslator

        return OrderTranslator(), "hand-written OrderTranslator"
    return rules_from_settings(None, catalog=catalog), "compiled rules, packaged defaults"


class _Entry:
    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


def measure_floor(values: Sequence[bytes], keep_bodies: int = 30) -> Floor:
    """What the consumer cannot avoid: decode, translate, encode every item, assemble bodies
    of 1,000 events (as the batcher fills them)."""
    from consumer.bodies import body_format
    from consumer.decode import Decoder
    from consumer.endpoints import Endpoint
    from consumer.phones import to_e164
    from consumer.schemas import SchemaCatalog

    catalog = SchemaCatalog.load()
    translator, translator_name = run_translator(catalog)
    decoder = Decoder(catalog, mapped_records=translator.mapped_records)
    # Any: assemble() gains a group argument (default None) for other endpoints.
    fmt: Any = body_format(Endpoint.EVENTS)
    max_items = Endpoint.EVENTS.spec.max_items
    bodies: list[bytes] = []

    def run(chunk: Sequence[bytes]) -> int:
        events = 0
        batch: list[_Entry] = []
        for value in chunk:
            for operation in translator.translate(decoder.decode(value)):
                batch.append(_Entry(fmt.encode(operation)))
                if len(batch) == max_items:
                    body = fmt.assemble(batch)[0]
                    if len(bodies) < keep_bodies:
                        bodies.append(body)
                    events += len(batch)
                    batch = []
        if batch:
            fmt.assemble(batch)
            events += len(batch)
        return events

    run(values[:500])  # warm-up: schema plans, phonenumbers metadata
    bodies.clear()
    # Start as cold as a fresh consumer process: phone verdicts are cached per process, and
    # the second floor of a run would otherwise find every customer's phone already parsed.
    to_e164.cache_clear()
    wall, cpu = time.perf_counter(), time.process_time()
    events = run(values)
    wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    return Floor(len(values), events, wall_s, cpu_s, bodies, translator_name)


def emulator_capacity(bodies: Sequence[bytes], *, validate: bool) -> float:
    """Events per second one emulator thread ingests (same bodies, rate limits off)."""
    from kafka_klaviyo_dev.demo import find_openapi_spec
    from kafka_klaviyo_dev.emulator.app import Request
    from kafka_klaviyo_dev.emulator.config import EmulatorConfig, RateLimitSettings
    from kafka_klaviyo_dev.emulator.server import EmulatorServer

    server = EmulatorServer(
        EmulatorConfig(
            api_keys={API_KEY: ACCOUNT},
            spec_path=find_openapi_spec() if validate else None,
            validate=validate,
            rate_limits=RateLimitSettings(enabled=False),
            drop_test_email_domains=True,
        )
    )
    headers = {
        "authorization": f"Klaviyo-API-Key {API_KEY}",
        "revision": server.config.revision,
        "content-type": "application/vnd.api+json",
    }
    path = "/api/event-bulk-create-jobs"
    server.app.handle_api(Request("POST", path, headers, bodies[0]))  # warm-up
    server.app.reset()
    started = time.perf_counter()
    events = 0
    for body in bodies:
        response = server.app.handle_api(Request("POST", path, headers, body))
        if response.status != 202:
            raise RuntimeError(f"emulator answered {response.status}: {response.body[:300]!r}")
        events += body.count(b'{"type":"event","attributes":')
    return events / (time.perf_counter() - started)


# -- processes ----------------------------------------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KAFKA_", "KLAVIYO_", "SCHEMA_REGISTRY"))
    }
    env.update(extra)
    return env


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """Who used the machine's CPUs between :meth:`start` and :meth:`stop`, in cores."""

    def __init__(self, **pids: int | None) -> None:
        self._pids = {name: pid for name, pid in pids.items() if pid}
        self._start: tuple[float, dict[str, float], list[int]] = (0.0, {}, [])
        self.cores: dict[str, float] = {}

    @staticmethod
    def _machine() -> list[int]:
        # user nice system idle iowait irq softirq steal
        return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]

    def _ours(self) -> dict[str, float]:
        return {name: _cpu_seconds(pid) for name, pid in self._pids.items()} | {
            "bench": time.process_time()
        }

    def start(self) -> None:
        self._start = (time.monotonic(), self._ours(), self._machine())

    def stop(self) -> None:
        began, ours_0, machine_0 = self._start
        wall = time.monotonic() - began
        ours_1, machine_1 = self._ours(), self._machine()
        tick = os.sysconf("SC_CLK_TCK")
        delta = [(b - a) / tick for a, b in zip(machine_0, machine_1, strict=True)]
        busy = sum(delta[i] for i in (0, 1, 2, 5, 6))
        self.cores = {name: (ours_1[name] - ours_0[name]) / wall for name in ours_1}
        self.cores["rest of the machine"] = max(0.0, busy / wall - sum(self.cores.values()))
        self.cores["steal"] = delta[7] / wall

    def __str__(self) -> str:
        shares = ", ".join(f"{name} {cores:.2f}" for name, cores in self.cores.items())
        return f"CPU use in cores of {os.cpu_count()}: {shares}"


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's live threads: the poll loop (main thread), librdkafka's
    threads (named ``rdk:*``) and the other Python threads (delivery pool, metrics)."""
    out = {"poll loop": 0.0, "librdkafka": 0.0, "other threads": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (task / "stat").read_text()
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2 :].split()
                cpu = (int(fields[11]) + int(fields[12])) / tick
                if task.name == str(pid):
                    out["poll loop"] += cpu
                elif comm.startswith("rdk:"):
                    out["librdkafka"] += cpu
                else:
                    out["other threads"] += cpu
    return out


def _memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


class EmulatorProcess:
    """``python -m kafka_klaviyo_dev emulator`` on a free port."""

    def __init__(
        self,
        log_path: Path,
        *,
        rate_limits: bool,
        validate: bool,
        rate_limit_override: str | None = None,
    ) -> None:
        from kafka_klaviyo_dev.demo import find_openapi_spec

        spec = find_openapi_spec() if validate else None
        if validate and spec is None:
            raise SystemExit("--validate needs Klaviyo's OpenAPI spec (KLAVIYO_OPENAPI_SPEC)")
        self.validation = "on" if spec is not None else "off"
        command = [
            sys.executable,
            "-m",
            "kafka_klaviyo_dev",
            "emulator",
            "--port",
            "0",
            "--api-key",
            f"{API_KEY}={ACCOUNT}",
            "--drop-test-emails",
            "--rate-limits" if rate_limits else "--no-rate-limits",
            *(["--spec", str(spec)] if spec is not None else ["--no-validate"]),
            *(["--rate-limit", rate_limit_override] if rate_limit_override else []),
        ]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()  # blocks until ready (or exit)
        if "ready at " not in line:
            self.stop()
            raise RuntimeError(f"the emulator did not start: {log_path.read_text()[-2000:]}")
        self.base_url = line.rsplit("ready at ", 1)[1].strip()
        self.cpu_at_ready = self.cpu_seconds()
        from kafka_klaviyo_dev.emulator.client import EmulatorClient

        self.client = EmulatorClient(self.base_url, timeout=30.0)

    def delivered(self) -> tuple[int, dict[str, int]]:
        """(events the emulator took in: stored, or accepted-and-dropped), requests by status."""
        stats = self.client.stats()
        events = stats.accepted.get("events", 0) + stats.test_domain_dropped.get("events", 0)
        return events, dict(stats.requests.get("events", {}))

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.process.pid)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class ConsumerProcess:
    """``python -m consumer run``, its JSON log in a file, its memory sampled from /proc."""

    def __init__(self, env: dict[str, str], log_path: Path, command: Sequence[str] = ()) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, *(command or ("-m", "consumer", "run"))],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid
        self.rss_samples: list[tuple[float, int]] = []
        self._sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._sampling.wait(0.25):
            rss = _memory_kb(self.pid).get("VmRSS")
            if rss is None:
                return
            self.rss_samples.append((time.monotonic() - self.started, rss))

    def alive(self) -> bool:
        return self.process.poll() is None

    def assigned(self) -> bool:
        """The consumer joined the group and got partitions (its log says so)."""
        try:
            return b'"message":"assigned ' in self.log_path.read_bytes()
        except OSError:
            return False

    def peak_rss_mb(self) -> float:
        """VmHWM: the kernel's record of the highest RSS, so no peak falls between samples."""
        hwm = _memory_kb(self.pid).get("VmHWM")
        sampled = max((rss for _, rss in self.rss_samples), default=0)
        return max(hwm or 0, sampled) / 1024

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.pid)

    def thread_cpu(self) -> dict[str, float]:
        return _thread_cpu(self.pid)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (drain, commit, leave the group) and wait; SIGKILL after ``timeout_s``."""
        self._sampling.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        self._log.close()
        return code

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class LagProbe:
    """The group's lag on one topic, with one reused client (the topic is fully produced)."""

    def __init__(self, bootstrap_servers: str, group_id: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap_servers, "group.id": group_id, "log_level": 3}
        )
        metadata = self._consumer.list_topics(topic, timeout=10)
        self._partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        self._marks = {
            tp.partition: self._consumer.get_watermark_offsets(tp, timeout=10)
            for tp in self._partitions
        }

    def lag(self) -> int:
        lag = 0
        for tp in self._consumer.committed(self._partitions, timeout=10):
            low, high = self._marks[tp.partition]
            lag += max(0, high - (tp.offset if tp.offset >= 0 else low))
        return lag

    def close(self) -> None:
        self._consumer.close()


# -- the bench ------------------------------------------------------------------------------


@dataclass
class Bench:
    sizes: Sizes
    consumer_env: dict[str, str]
    validate_a: bool
    validate_b: bool
    profile: str | None
    profiler: str = "cprofile"
    entries: list[Entry] = field(default_factory=list)
    kafka: Any = None
    messages: OrderMessages | None = None
    prep_s: float = 0.0
    produced: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def put(self, *args: Any, **kwargs: Any) -> None:
        if self.sizes.quick:
            kwargs["note"] = "; ".join(filter(None, ["QUICK run", kwargs.get("note")]))
        entry = record(*args, **kwargs)
        self.entries.append(entry)
        value = entry["value"]
        print(f"  -> {entry['name']} = {value:,} {entry['unit']}", flush=True)

    # -- preparation ----------------------------------------------------------------------

    def prepare(self, scenarios: str) -> None:
        from kafka_klaviyo_dev.kafka import LocalKafka
        from kafka_klaviyo_dev.produce import produce_values

        started = time.monotonic()
        print("preparing: order templates", flush=True)
        self.messages = OrderMessages()
        check_messages(self.messages)
        print("preparing: starting the local Kafka broker", flush=True)
        self.kafka = LocalKafka()
        self.kafka.start()
        plan = {"a": self.sizes.a_orders, "b": self.sizes.b_orders, "c": self.sizes.c_messages}
        first = 0
        for scenario in scenarios:
            count = plan[scenario]
            topic = f"bench.{scenario}"
            self.kafka.create_topic(topic, partitions=PARTITIONS)
            self.kafka.create_topic(f"{topic}.dlq", partitions=1)
            t = time.monotonic()
            produce_values(self.kafka.bootstrap_servers, topic, self.messages.stream(first, count))
            produced_s = time.monotonic() - t
            events = self.messages.events(first, count)
            self.produced[scenario] = (first, count, events)
            print(
                f"preparing: produced {count:,} messages ({events:,} events) to {topic} in "
                f"{produced_s:.1f}s ({count / produced_s:,.0f} msg/s)",
                flush=True,
            )
            first += count
        self.prep_s = time.monotonic() - started

    def close(self) -> None:
        if self.kafka is not None:
            self.kafka.stop()

    def env(self, scenario: str, base_url: str) -> dict[str, str]:
        topic = f"bench.{scenario}"
        return _clean_env(
            KAFKA_BOOTSTRAP_SERVERS=self.kafka.bootstrap_servers,
            KLAVIYO_BASE_URL=base_url,
            KLAVIYO_API_KEY=API_KEY,
            KAFKA_KLAVIYO_KAFKA__TOPICS=topic,
            KAFKA_KLAVIYO_KAFKA__GROUP_ID=f"bench-{scenario}",
            KAFKA_KLAVIYO_KAFKA__DEAD_LETTER_TOPIC=f"{topic}.dlq",
            **SCENARIO_ENV[scenario],
            **self.consumer_env,
        )

    def spawn_consumer(self, scenario: str, emulator: EmulatorProcess) -> ConsumerProcess:
        """``python -m consumer run`` for one scenario (under the profiler if asked)."""
        command: Sequence[str] = ()
        profiled = self.profile == scenario
        if profiled and self.profiler == "cprofile":
            command = ("-m", "bench.e2e", "_profiled-run", str(LOG_DIR / f"profile-{scenario}"))
        consumer = ConsumerProcess(
            self.env(scenario, emulator.base_url), LOG_DIR / f"consumer-{scenario}.log", command
        )
        if profiled and self.profiler == "py-spy":
            out = LOG_DIR / f"py-spy-{scenario}.txt"
            # Samples every thread (native frames too) until the consumer exits; raw
            # collapsed stacks, one line per stack with its sample count.
            subprocess.Popen(
                [
                    *(_py_spy(), "record", "--pid", str(consumer.pid), "--rate", "100"),
                    *("--threads", "--nonblocking", "--format", "raw", "--output", str(out)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(LOG_DIR / f"py-spy-{scenario}.log").open("wb"),
            )
            print(f"  py-spy is sampling the consumer into {out}", flush=True)
        return consumer

    # -- (a) throughput against the floor ------------------------------------------------

    def run_a(self) -> None:
        assert self.messages is not None
        first, count, events = self.produced["a"]
        print(f"\n(a) end-to-end throughput: {count:,} orders, {events:,} events", flush=True)
        values = self.messages.values(first, count)
        floor = measure_floor(values)
        print(
            f"  floor (decode + translate + JSON-encode, in-process): {floor.events_per_s:,.0f}"
            f" events/s, {floor.cpu_us_per_event:.1f} us CPU/event",
            flush=True,
        )
        capacity = emulator_capacity(floor.bodies, validate=self.validate_a)
        print(f"  emulator alone (one thread, same bodies): {capacity:,.0f} events/s", flush=True)

        emulator = EmulatorProcess(
            LOG_DIR / "emulator-a.log", rate_limits=False, validate=self.validate_a
        )
        probe = LagProbe(self.kafka.bootstrap_servers, "bench-a", "bench.a")
        consumer = self.spawn_consumer("a", emulator)
        share = CpuShare(
            consumer=consumer.pid, emulator=emulator.process.pid, broker=self.kafka.pid
        )
        share.start()
        try:
            run = self._until_delivered(consumer, emulator, probe, events, timeout_s=1200)
            share.stop()
            consumer_cpu = consumer.cpu_seconds() - run.cpu_at_start
            threads = consumer.thread_cpu()
            emulator_cpu = emulator.cpu_seconds() - emulator.cpu_at_ready
            peak = consumer.peak_rss_mb()
        finally:
            code = consumer.stop()
            probe.close()
            emulator.stop()
        self._require(run.ok and code == 0, "a", consumer, f"exit {code}, {run.problem}")
        load = _load()
        # The floor again, right after: the machine's speed drifts (other work, CPU steal), so
        # the baseline is the mean of the floor just before and just after the e2e run.
        after = measure_floor(values)
        del values
        floor_rate = (floor.events_per_s + after.events_per_s) / 2
        floor_cpu_us = (floor.cpu_us_per_event + after.cpu_us_per_event) / 2
        wall = run.delivered_at
        e2e = events / wall
        note = (
            f"{count:,} orders / {events:,} events; translator: {floor.translator}; emulator"
            f" subprocess, rate limits off (emulator and consumer), schema validation"
            f" {emulator.validation};"
            f" spawn -> all events in the emulator {wall:.1f}s (lag 0 at"
            f" {run.lag_zero_at:.1f}s, commit interval 1 s); floor before"
            f" / after: {floor.events_per_s:,.0f} / {after.events_per_s:,.0f} events/s"
            f" ({floor.cpu_s / floor.wall_s:.0%} / {after.cpu_s / after.wall_s:.0%} of a core);"
            f" {share}; {load}"
        )
        self.put(
            "a_e2e_events_per_s",
            e2e,
            "events/s",
            baseline=floor_rate,
            target=">= 0.7",
            note=note,
        )
        self.put("a_e2e_orders_per_s", count / wall, "messages/s")
        self.put(
            "a_consumer_startup_s",
            run.startup_at,
            "s",
            note="spawn -> partitions assigned (included in a_e2e_events_per_s)",
        )
        split = ", ".join(
            f"{name} {(threads[name] - run.threads_at_start.get(name, 0.0)) / events * 1e6:.1f}"
            for name in threads
        )
        self.put(
            "a_consumer_cpu_us_per_event",
            consumer_cpu / events * 1e6,
            "us CPU/event",
            baseline=floor_cpu_us,
            ratio=floor_cpu_us / (consumer_cpu / events * 1e6),
            note="ratio = floor CPU / consumer CPU per event after startup, all threads (1.0:"
            f" the consumer adds nothing to the floor's work); by thread (us/event): {split}",
        )
        self.put(
            "a_emulator_capacity_events_per_s",
            capacity,
            "events/s",
            baseline=floor_rate,
            note=f"the emulator's own ingest rate for these bodies, one thread in-process; the"
            f" emulator process used {emulator_cpu / events * 1e6:.0f} us CPU/event during (a)",
        )
        self.put("a_peak_rss_mb", peak, "MB")

    # -- (b) Klaviyo's real rate limits ------------------------------------------------------

    def run_b(self) -> None:
        sizes = self.sizes
        _, count, events = self.produced["b"]
        limits = "Klaviyo's limits for events (10/s burst, 150/min steady)"
        aligned = (
            "whole windows of the emulator's"
            if sizes.b_align
            else "window(s) not aligned with the emulator's"
        )
        print(
            f"\n(b) rate-limited delivery: {count:,} orders, {events:,} events; {limits};"
            f" measured over {sizes.b_windows} x {sizes.b_window_s:.0f}s ({aligned})",
            flush=True,
        )
        emulator = EmulatorProcess(
            LOG_DIR / "emulator-b.log", rate_limits=True, validate=self.validate_b
        )
        config = emulator.client.config()
        spec = next(e for e in config["endpoints"] if e["name"] == "events")
        per_min = min(spec["burst"] * 60, spec["steady"]) * spec["max_items"]
        probe = LagProbe(self.kafka.bootstrap_servers, "bench-b", "bench.b")
        consumer = self.spawn_consumer("b", emulator)
        try:
            _wait(lambda: emulator.delivered()[0] > 0 or not consumer.alive(), 120, "a delivery")
            time.sleep(2.0)  # past the first burst
            window = sizes.b_window_s
            # Both processes read CLOCK_MONOTONIC: start on one of the emulator's window edges.
            start = (
                (math.floor(time.monotonic() / window) + 1) * window
                if sizes.b_align
                else time.monotonic()
            )
            end = start + sizes.b_windows * window
            _sleep_until(start)
            delivered_1, requests_1 = emulator.delivered()
            _sleep_until(end)
            delivered_2, requests_2 = emulator.delivered()
            lag = probe.lag()
            stats = emulator.client.stats()
            alive = consumer.alive()
        finally:
            code = consumer.stop()
            probe.close()
            emulator.stop()
        self._require(alive, "b", consumer, "the consumer died during the measurement")
        measured_s = end - start
        rate = (delivered_2 - delivered_1) / measured_s * 60
        backlog_note = "" if lag > 0 else "; WARNING: the backlog ran out inside the window"
        total = sum(requests_2.values())
        throttled = requests_2.get("429", 0)
        window_requests = {k: v - requests_1.get(k, 0) for k, v in requests_2.items()}
        accepted_in_window = window_requests.get("202", 0)
        self.put(
            "b_rate_limited_events_per_min",
            rate,
            "events/min",
            target=f">= {0.95 * per_min:.0f}",
            note=f"{limits}, limit {per_min:,} events/min; the consumer's own rate limiter at its"
            f" defaults; {sizes.b_windows} x "
            f"{window:.0f}s ({aligned}); schema validation "
            f"{emulator.validation}; {_load()}{backlog_note}; {_exit_note(code)}",
        )
        self.put(
            "b_429_share",
            throttled / total if total else 0.0,
            "of requests",
            target="<= 0.01",
            note=f"{throttled} of {total} requests answered 429 from spawn to window end"
            f" (in the windows: {window_requests.get('429', 0)} of"
            f" {sum(window_requests.values())}); statuses {requests_2}",
        )
        self.put(
            "b_retry_after_violations",
            stats.retry_after_violations,
            "requests",
            target="<= 0",
        )
        self.put(
            "b_events_per_accepted_request",
            (delivered_2 - delivered_1) / accepted_in_window if accepted_in_window else 0.0,
            "events",
            note="batch fill in the windows (1,000 is a full Bulk Create Events request)",
        )

    # -- (c) memory with a backlog of a million ----------------------------------------------

    def run_c(self) -> None:
        _, count, events = self.produced["c"]
        print(
            f"\n(c) peak RSS with a backlog of {count:,} messages ({events:,} events);"
            f" at most {self.sizes.c_max_s:.0f}s",
            flush=True,
        )
        emulator = EmulatorProcess(
            LOG_DIR / "emulator-c.log", rate_limits=False, validate=self.validate_a
        )
        probe = LagProbe(self.kafka.bootstrap_servers, "bench-c", "bench.c")
        consumer = self.spawn_consumer("c", emulator)
        share = CpuShare(
            consumer=consumer.pid, emulator=emulator.process.pid, broker=self.kafka.pid
        )
        share.start()
        try:
            run = self._until_delivered(
                consumer, emulator, probe, events, timeout_s=self.sizes.c_max_s, give_up_ok=True
            )
            share.stop()
            peak = consumer.peak_rss_mb()
            lag = probe.lag()
            delivered, _ = emulator.delivered()
        finally:
            code = consumer.stop()
            probe.close()
            emulator.stop()
        self._require(run.problem in ("", "timeout"), "c", consumer, run.problem)
        elapsed = run.delivered_at if run.ok else self.sizes.c_max_s
        done = count - lag
        samples = consumer.rss_samples
        first_minute = max((rss for t, rss in samples if t <= 60), default=0) / 1024
        last_minute = max((rss for t, rss in samples if t >= elapsed - 60), default=0) / 1024
        coverage = (
            f"worked through all {count:,} messages in {elapsed:.0f}s"
            if run.ok
            else f"stopped after {elapsed:.0f}s having committed {done:,} of {count:,} messages"
            f" ({delivered:,} of {events:,} events delivered)"
        )
        self.put(
            "c_peak_rss_mb",
            peak,
            "MB",
            target="<= 300",
            note=f"VmHWM of the run process; {coverage}; max RSS in the first minute"
            f" {first_minute:.0f} MB, in the last minute {last_minute:.0f} MB; {_load()};"
            f" {_exit_note(code)}",
        )
        self.put("c_messages_worked_through", done, "messages")
        self.put("c_e2e_events_per_s", delivered / elapsed, "events/s", note=str(share))

    # -- helpers -------------------------------------------------------------------------------

    @dataclass
    class Run:
        ok: bool = False
        problem: str = ""
        startup_at: float = math.nan
        delivered_at: float = math.nan
        lag_zero_at: float = math.nan
        cpu_at_start: float = 0.0
        threads_at_start: dict[str, float] = field(default_factory=dict)

    def _until_delivered(
        self,
        consumer: ConsumerProcess,
        emulator: EmulatorProcess,
        probe: LagProbe,
        events: int,
        *,
        timeout_s: float,
        give_up_ok: bool = False,
    ) -> Bench.Run:
        run = Bench.Run()
        deadline = consumer.started + timeout_s
        last_report = time.monotonic()
        while True:
            now = time.monotonic()
            if not consumer.alive():
                run.problem = f"the consumer exited with {consumer.process.returncode}"
                return run
            if math.isnan(run.startup_at) and consumer.assigned():
                run.startup_at = now - consumer.started
                run.cpu_at_start = consumer.cpu_seconds()
                run.threads_at_start = consumer.thread_cpu()
            delivered, _ = emulator.delivered()
            if delivered >= events and math.isnan(run.delivered_at):
                run.delivered_at = time.monotonic() - consumer.started
            if not math.isnan(run.delivered_at) and probe.lag() == 0:
                run.lag_zero_at = time.monotonic() - consumer.started
                run.ok = delivered == events
                if not run.ok:
                    run.problem = f"{delivered} events delivered, {events} expected"
                return run
            if now > deadline:
                run.problem = "timeout"
                if not give_up_ok:
                    run.problem += f" ({delivered:,} of {events:,} events after {timeout_s:.0f}s)"
                return run
            if now - last_report >= 30:
                last_report = now
                rss = _memory_kb(consumer.pid).get("VmRSS", 0) / 1024
                print(
                    f"  ... {now - consumer.started:.0f}s: {delivered:,} of {events:,} events,"
                    f" consumer RSS {rss:.0f} MB",
                    flush=True,
                )
            time.sleep(0.2)

    def _require(self, ok: bool, scenario: str, consumer: ConsumerProcess, why: str) -> None:
        if not ok:
            raise SystemExit(
                f"({scenario}) failed: {why}\nconsumer log {consumer.log_path}:\n{consumer.tail()}"
            )


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


def _sleep_until(moment: float) -> None:
    while (remaining := moment - time.monotonic()) > 0:
        time.sleep(min(remaining, 1.0))


def _py_spy() -> str:
    found = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not found:
        raise SystemExit(
            "--profiler py-spy: py-spy is not on PATH (pip install py-spy, or PY_SPY=)"
        )
    return found


def _exit_note(code: int) -> str:
    if code == 0:
        return "SIGTERM -> exit 0"
    return f"SIGTERM with a backlog left -> exit {code} (see the consumer log)"


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} CPUs"


# -- profiling: the consumer under cProfile, every thread -----------------------------------


def _profiled_run(out_prefix: str) -> None:
    """``python -m consumer run`` with one cProfile per thread; stats written at exit."""
    import cProfile
    import pstats

    profiles: list[tuple[str, cProfile.Profile]] = []
    lock = threading.Lock()

    def start_thread_profile(*_: Any) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append((threading.current_thread().name, profile))
        sys.setprofile(None)
        profile.enable()

    threading.setprofile(start_thread_profile)
    main = cProfile.Profile()
    profiles.append(("main", main))
    from consumer.cli import cli

    code: Any = 0
    main.enable()
    try:
        cli.main(["run"], prog_name="kafka-klaviyo", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
    finally:
        main.disable()
        for _, profile in profiles:
            with contextlib.suppress(Exception):
                profile.disable()
        merged: pstats.Stats | None = None
        for name, profile in profiles:
            with contextlib.suppress(TypeError):  # a thread that never ran profiled code
                stats = pstats.Stats(profile)
                stats.dump_stats(f"{out_prefix}-{name}.pstats")
                if merged is None:
                    merged = pstats.Stats(profile)
                else:
                    merged.add(profile)
        if merged is not None:
            merged.dump_stats(f"{out_prefix}.pstats")
    sys.exit(code)


# -- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_profiled-run"]:
        _profiled_run(args[1])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.e2e",
        description="End-to-end benchmarks of `kafka-klaviyo run`: (a) throughput vs"
        " the in-process floor, (b) delivery under Klaviyo's rate limits, (c) peak RSS with a"
        " 1,000,000-message backlog. Figures go to bench-results.json.",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (~3 minutes)")
    parser.add_argument("--only", default="abc", help="scenarios to run, e.g. 'a' or 'a,c'")
    parser.add_argument("--a-orders", type=int, help="backlog of (a) in orders")
    parser.add_argument("--b-orders", type=int, help="backlog of (b) in orders")
    parser.add_argument("--c-messages", type=int, help="backlog of (c) in messages")
    parser.add_argument("--c-max-seconds", type=float, help="time cap of (c)")
    parser.add_argument(
        "--validate",
        choices=("off", "on"),
        default="off",
        help="OpenAPI schema validation in the emulator for (a) and (c) (default off: it costs"
        " the emulator CPU that the consumer shares on a small machine)",
    )
    parser.add_argument(
        "--validate-b",
        choices=("off", "on"),
        default="on",
        help="schema validation in the emulator for (b) (default on: 150 requests/min leave"
        " room for it)",
    )
    parser.add_argument(
        "--consumer-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every consumer process (repeatable)",
    )
    parser.add_argument(
        "--profile",
        choices=("a", "b", "c"),
        help="run that scenario's consumer under cProfile (every thread); stats in"
        f" {LOG_DIR.relative_to(REPO)}/profile-<scenario>*.pstats",
    )
    parser.add_argument(
        "--profiler",
        choices=("cprofile", "py-spy"),
        default="cprofile",
        help="cprofile: the consumer under cProfile, one profile per thread (slows it down);"
        " py-spy: sampled from outside, every thread, native frames (needs py-spy on PATH or"
        f" PY_SPY=); output in {LOG_DIR.relative_to(REPO)}/",
    )
    options = parser.parse_args(args)
    scenarios = "".join(s for s in "abc" if s in options.only)
    if not scenarios:
        parser.error("--only names none of a, b, c")
    sizes = QUICK if options.quick else FULL
    overrides = {
        "a_orders": options.a_orders,
        "b_orders": options.b_orders,
        "c_messages": options.c_messages,
        "c_max_s": options.c_max_seconds,
    }
    sizes = Sizes(**{**sizes.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    consumer_env = dict(item.split("=", 1) for item in options.consumer_env)
    LOG_DIR.mkdir(parents=True, exist_ok=True)

    bench = Bench(
        sizes,
        consumer_env,
        validate_a=options.validate == "on",
        validate_b=options.validate_b == "on",
        profile=options.profile,
        profiler=options.profiler,
    )
    started = time.monotonic()
    print(f"kafka-klaviyo end-to-end benchmarks ({'quick' if sizes.quick else 'full'}): {_load()}")
    try:
        bench.prepare(scenarios)
        bench.put(
            "e2e_preparation_s",
            bench.prep_s,
            "s",
            note="templates + broker start + producing "
            + ", ".join(f"{s}: {c:,} msgs" for s, (_, c, _) in bench.produced.items()),
        )
        for scenario in scenarios:
            getattr(bench, f"run_{scenario}")()
    finally:
        bench.close()
    print_table(bench.entries, title=f"end-to-end benchmarks ({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
