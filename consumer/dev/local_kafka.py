"""A single-node KRaft Apache Kafka broker for local use and tests, from Maven Central jars.

Why: this project's machines have Java 17 and Maven but no Docker engine, and tests that
claim Kafka behaviour must run against a real broker. The broker's jars
(``org.apache.kafka:kafka_2.13``, pinned below, plus log4j for its SLF4J 1.7 logging) are
resolved once by Maven into a cache outside the repository; later starts reuse the cached
classpath and need no network.

Mechanism: ``start`` writes ``server.properties`` (combined broker+controller, bound to
127.0.0.1, replication factors 1, no initial rebalance delay), formats the storage with
``kafka.tools.StorageTool format --standalone`` once, launches ``java kafka.Kafka`` in its own
session with the log in the state folder, and polls (with a deadline) until the log says
"Kafka Server started" and the port accepts connections. ``stop`` sends SIGTERM, waits for a
clean shutdown, and SIGKILLs only after a deadline.

``scram_users`` adds a second listener, ``SASL_PLAINTEXT`` with SCRAM-SHA-512, for tests of
authentication: the users' credentials are written into the metadata log when the storage
is formatted (``--add-scram``), and the broker keeps talking to itself over PLAINTEXT. Its
address is ``sasl_bootstrap`` once started.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from consumer.errors import LocalKafkaError, MissingToolError

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.25.3"
READY_LINE = "Kafka Server started"
DEFAULT_PORT = 9092
SCRAM_MECHANISM = "SCRAM-SHA-512"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>clinic-events.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.console.ref = console
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
logger.kafka.name = kafka.Kafka
logger.kafka.level = INFO
"""


def default_cache_dir() -> Path:
    """Where resolved classpaths are cached: outside the repository, shared by checkouts."""
    explicit = os.environ.get("CLINIC_EVENTS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "clinic-events"


def default_state_dir() -> Path:
    """The project-local state folder (data, log, pid) of the local broker."""
    base = os.environ.get("CLINIC_EVENTS_STATE_DIR", ".clinic-events")
    return Path(base) / "kafka"


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Why not any such string: one in 64 starts with ``-``, which the storage tool's argument
    parser takes for an option (``--cluster-id: expected one argument``), so those are
    drawn again, as Kafka's own ``Uuid.randomUuid`` does.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """What ``status`` reports."""

    running: bool
    bootstrap: str | None
    pid: int | None


def require_tools(*, need_maven: bool) -> str:
    """Check that Java 17+ (and Maven when jars must be resolved) are installed; return java."""
    java = shutil.which("java")
    if java is None:
        raise MissingToolError(
            "Java 17 or newer is needed for the local Kafka broker: install it "
            "(e.g. 'apt-get install openjdk-17-jre-headless')"
        )
    version = subprocess.run(
        [java, "-version"], capture_output=True, text=True, check=False
    ).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < 17:
        raise MissingToolError(
            f"Java 17 or newer is needed for the local Kafka broker, found {major or 'unknown'}: "
            "install it (e.g. 'apt-get install openjdk-17-jre-headless')"
        )
    if need_maven and shutil.which("mvn") is None:
        raise MissingToolError(
            "Maven is needed once to fetch the Kafka jars: "
            "install it (e.g. 'apt-get install maven')"
        )
    return java


def resolve_classpath(cache_dir: Path | None = None) -> str:
    """The broker's classpath, resolved by Maven on first use and cached afterwards."""
    cache = (cache_dir or default_cache_dir()) / f"kafka-{KAFKA_VERSION}"
    cp_file = cache / "classpath.txt"
    if cp_file.exists():
        classpath = cp_file.read_text().strip()
        if classpath and all(Path(jar).exists() for jar in classpath.split(os.pathsep)):
            return classpath
    require_tools(need_maven=True)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
    result = subprocess.run(
        ["mvn", "-B", "-q", "-f", str(cache / "pom.xml"), "dependency:build-classpath",
         f"-Dmdep.outputFile={cp_file}"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0 or not cp_file.exists():
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise LocalKafkaError("Maven could not resolve the Kafka jars:\n" + "\n".join(tail))
    return cp_file.read_text().strip()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; treat it as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


class LocalKafka:
    """Start, stop and inspect one local broker whose state lives in ``state_dir``."""

    def __init__(self, state_dir: Path | None = None, *, cache_dir: Path | None = None,
                 scram_users: Mapping[str, str] | None = None) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.cache_dir = cache_dir
        self.scram_users = dict(scram_users or {})
        self.sasl_bootstrap: str | None = None  # the SCRAM listener, once started with users
        self._pid_file = self.state_dir / "broker.pid"
        self._port_file = self.state_dir / "broker.port"
        self.log_file = self.state_dir / "broker.log"
        self._process: subprocess.Popen[bytes] | None = None  # kept so stop() can reap it

    def status(self) -> BrokerStatus:
        pid = self._read_int(self._pid_file)
        port = self._read_int(self._port_file)
        if pid is None or port is None or not _pid_alive(pid):
            return BrokerStatus(running=False, bootstrap=None, pid=None)
        return BrokerStatus(running=port_open(port), bootstrap=f"127.0.0.1:{port}", pid=pid)

    def start(self, *, port: int | None = None, timeout_s: float = 90.0) -> str:
        """Start the broker (or find it running) and return its bootstrap address.

        ``port`` None reuses the previous port or 9092 when free; 0 picks any free port.
        """
        current = self.status()
        if current.running and current.bootstrap:
            return current.bootstrap
        if current.pid is None:
            self._stale_cleanup()
        classpath = resolve_classpath(self.cache_dir)
        java = require_tools(need_maven=False)
        broker_port, controller_port = self._choose_ports(port)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        props = self._write_config(broker_port, controller_port)
        if not (self.state_dir / "data" / "meta.properties").exists():
            self._format(java, classpath, props)
        self.log_file.write_text("")
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                 f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
                 "-cp", classpath, "kafka.Kafka", str(props)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._process = process
        self._pid_file.write_text(str(process.pid))
        self._port_file.write_text(str(broker_port))
        self._wait_ready(process, broker_port, timeout_s)
        return f"127.0.0.1:{broker_port}"

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """Stop the broker cleanly; return False if none was running."""
        pid = self._read_int(self._pid_file)
        if pid is None or not _pid_alive(pid):
            self._stale_cleanup()
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(pid):
            self._reap(pid)
            time.sleep(0.1)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self._reap(pid)
        if self._process is not None and self._process.pid == pid:
            self._process.wait(timeout=5)
            self._process = None
        self._stale_cleanup()
        return True

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LocalKafkaError(
                    f"Kafka exited with code {process.returncode} during start-up; "
                    f"last log lines:\n{self._log_tail()}"
                )
            if READY_LINE in self.log_file.read_text(errors="replace") and port_open(port):
                return
            time.sleep(0.2)
        self.stop()
        raise LocalKafkaError(
            f"Kafka was not ready within {timeout_s:.0f}s; last log lines:\n{self._log_tail()}"
        )

    def _choose_ports(self, requested: int | None) -> tuple[int, int]:
        """Pick (broker, controller) ports, reusing the earlier controller port.

        The formatted KRaft quorum remembers its controller endpoint, so the controller port
        is kept across restarts; the broker port may change freely.
        """
        previous = self._previous_ports()
        broker = requested
        if broker is None:
            candidates = [previous[0]] if previous else []
            candidates.append(DEFAULT_PORT)
            broker = next((p for p in candidates if not port_open(p)), 0) or free_port()
        elif broker == 0:
            broker = free_port()
        elif port_open(broker):
            raise LocalKafkaError(f"port {broker} is already in use; choose another with --port")
        if previous and not port_open(previous[1]):
            return broker, previous[1]
        if (self.state_dir / "data").exists():
            # Storage formatted for a controller port that is now taken: start it afresh.
            shutil.rmtree(self.state_dir / "data")
        return broker, free_port()

    def _previous_ports(self) -> tuple[int, int] | None:
        props = self.state_dir / "server.properties"
        with contextlib.suppress(OSError):
            text = props.read_text()
            broker = re.search(r"^advertised\.listeners=PLAINTEXT://[\d.]+:(\d+)(?:,|$)", text,
                               re.M)
            controller = re.search(
                r"^controller\.quorum\.bootstrap\.servers=[\d.]+:(\d+)$", text, re.M
            )
            if broker and controller:
                return int(broker.group(1)), int(controller.group(1))
        return None

    def _write_config(self, port: int, controller_port: int) -> Path:
        data_dir = self.state_dir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.flush.interval.messages": "9223372036854775807",
        }
        if self.scram_users:
            props.update(self._sasl_listener(port, controller_port))
        path = self.state_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        (self.state_dir / "log4j2.properties").write_text(_LOG4J2)
        return path

    def _sasl_listener(self, port: int, controller_port: int) -> dict[str, str]:
        """Properties of a SASL_PLAINTEXT (SCRAM) listener beside the PLAINTEXT one."""
        sasl_port = free_port()
        self.sasl_bootstrap = f"127.0.0.1:{sasl_port}"
        mechanism = SCRAM_MECHANISM.lower()
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},"
                         f"CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},"
                                    f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
            "listener.security.protocol.map":
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            f"listener.name.sasl_plaintext.{mechanism}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        }

    def _format(self, java: str, classpath: str, props: Path) -> None:
        cluster_id = new_cluster_id()
        scram = [arg for name, password in self.scram_users.items()
                 for arg in ("--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]")]
        result = subprocess.run(
            [java, "-Xmx256m",
             f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
             "-cp", classpath, "kafka.tools.StorageTool", "format",
             "-t", cluster_id, "-c", str(props), "--standalone", *scram],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            output = f"{result.stdout}{result.stderr}"
            raise LocalKafkaError(f"formatting Kafka storage failed:\n{output}")

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def _stale_cleanup(self) -> None:
        for path in (self._pid_file, self._port_file):
            path.unlink(missing_ok=True)

    @staticmethod
    def _reap(pid: int) -> None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    @staticmethod
    def _read_int(path: Path) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None
