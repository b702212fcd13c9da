"""A private Redis Cluster on loopback for the tests: masters (and replicas), started and stopped.

Each node is a ``redis-server --cluster-enabled yes`` process on a port below 55536 whose
cluster bus port (the port + 10000) is free too; ``redis-cli --cluster create`` joins them.
The node timeout is short (``NODE_TIMEOUT_MS``) so that a replica replaces a killed master
within a second or two. Every wait is bounded.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
#: Milliseconds before a silent node counts as failing (a failover follows): short for tests.
NODE_TIMEOUT_MS = 500
# Ports are drawn from this range: below 55536, since the bus port is the port + 10000.
_PORTS = (20000, 45000)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def cluster_ports(count: int, taken: set[int] | None = None) -> list[int]:
    """``count`` ports whose bus ports (+10000) are free too, a moment ago."""
    taken = set(taken or ())
    ports: list[int] = []
    for _ in range(2000):
        port = random.randint(*_PORTS)
        if port in taken or port + 10000 in taken or port - 10000 in taken:
            continue
        if _port_free(port) and _port_free(port + 10000):
            ports.append(port)
            taken |= {port, port + 10000}
            if len(ports) == count:
                return ports
    raise RuntimeError("no free ports for a Redis Cluster")


# redis-cli's flags (TLS, password) for the ports of such clusters.
_CLI_ARGS: dict[int, list[str]] = {}


def make_tls_files(folder: Path) -> dict[str, Path]:
    """A CA, and a certificate it signed for 127.0.0.1 with its key (openssl, one day)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {n: folder / n for n in ("ca.crt", "ca.key", "redis.crt", "redis.key", "redis.csr")}
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", files["ca.key"],
         "-out", files["ca.crt"], "-days", "1", "-subj", "/CN=hubplane-test-ca"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", files["redis.key"],
         "-out", files["redis.csr"], "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", files["redis.csr"], "-CA", files["ca.crt"], "-CAkey",
         files["ca.key"], "-CAcreateserial", "-out", files["redis.crt"], "-days", "1",
         "-extfile", folder / "san.ext"],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(["openssl", *map(str, step)], check=True, capture_output=True, timeout=30)
    return files


def command(port: int, *args: str, timeout: float = 2.0) -> str:
    """One command to a node with redis-cli, its reply as text ('' when it fails)."""
    try:
        done = subprocess.run(
            ["redis-cli", *_CLI_ARGS.get(port, []), "-h", LOOPBACK, "-p", str(port), *args],
            capture_output=True,
            timeout=timeout,
            text=True,
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout if done.returncode == 0 else ""


def cluster_info(port: int) -> dict[str, str]:
    """``CLUSTER INFO`` of a node as a dict (empty when it does not answer)."""
    out = {}
    for line in command(port, "CLUSTER", "INFO").splitlines():
        key, _, value = line.strip().partition(":")
        if value:
            out[key] = value
    return out


class RedisCluster:
    """``masters`` masters, each with ``replicas`` replicas, on loopback."""

    def __init__(
        self,
        workdir: Path,
        masters: int = 3,
        replicas: int = 0,
        tls: bool = False,
        password: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.masters = masters
        self.replicas = replicas
        self.ports = cluster_ports(masters * (1 + replicas))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        #: With ``tls``: the CA, certificate and key files (every port speaks TLS only).
        self.tls = make_tls_files(workdir / "tls") if tls else None
        #: The password every node asks for (and replicas give their masters).
        self.password = password
        for port in self.ports:
            flags = ["--tls", "--cacert", str(self.tls["ca.crt"])] if self.tls else []
            if password is not None:
                flags += ["-a", password, "--no-auth-warning"]
            if flags:
                _CLI_ARGS[port] = flags

    @property
    def url(self) -> str:
        """``redis+cluster://`` (``rediss+cluster://`` with TLS) with every node as a seed."""
        hosts = ",".join(f"{LOOPBACK}:{p}" for p in self.ports)
        if self.password is not None:
            hosts = f":{self.password}@{hosts}"
        if self.tls is not None:
            return f"rediss+cluster://{hosts}?ssl_ca_certs={self.tls['ca.crt']}"
        return "redis+cluster://" + hosts

    def seed_url(self, count: int = 1) -> str:
        """``redis+cluster://`` with the first ``count`` nodes only as seeds."""
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{p}" for p in self.ports[:count])

    # -- lifecycle -----------------------------------------------------------------------------

    def _spawn(self, port: int) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError(
                "redis-server not found: install Redis 7 (apt-get install redis-server)"
            )
        folder = self.workdir / str(port)
        folder.mkdir(exist_ok=True)
        log = open(folder / "redis.log", "ab")
        listen = ["--port", str(port)]
        if self.tls is not None:
            listen = [
                "--port", "0", "--tls-port", str(port),
                "--tls-cert-file", str(self.tls["redis.crt"]),
                "--tls-key-file", str(self.tls["redis.key"]),
                "--tls-ca-cert-file", str(self.tls["ca.crt"]),
                "--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "no",
            ]  # fmt: skip
        if self.password is not None:
            listen += ["--requirepass", self.password, "--masterauth", self.password]
        self.procs[port] = subprocess.Popen(
            [
                exe,
                *listen,
                "--bind",
                LOOPBACK,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                # A replica whose master died takes over even if it was cut off for a while.
                "--cluster-replica-validity-factor",
                "0",
                # Slots without a master do not stop the rest of the cluster.
                "--cluster-require-full-coverage",
                "no",
                "--cluster-allow-pubsubshard-when-down",
                "yes",
            ],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, create the cluster, wait until every node says it is ok."""
        for port in self.ports:
            self._spawn(port)
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while command(port, "PING").strip() != "PONG":
                if self.procs[port].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {port} did not start:\n{self.logs(port)}")
                time.sleep(0.05)
        done = subprocess.run(
            [
                "redis-cli",
                *_CLI_ARGS.get(self.ports[0], []),
                "--cluster",
                "create",
                *(f"{LOOPBACK}:{p}" for p in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=max(deadline - time.monotonic(), 1.0),
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        self.wait_ok(max(deadline - time.monotonic(), 1.0))

    def wait_ok(self, timeout: float = 15.0, ports: list[int] | None = None) -> None:
        """Wait until each of ``ports`` (default: the live nodes) reports ``cluster_state:ok``
        with every slot served and agrees on the number of nodes."""
        ports = ports or self.live_ports()
        deadline = time.monotonic() + timeout
        while True:
            infos = [cluster_info(p) for p in ports]
            if all(
                i.get("cluster_state") == "ok"
                and i.get("cluster_slots_ok") == "16384"
                and i.get("cluster_known_nodes") == str(len(self.ports))
                for i in infos
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster is not ok after {timeout} s: {infos}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop every node (SIGKILL: nothing is saved anyway)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        for port in self.ports:
            _CLI_ARGS.pop(port, None)

    # -- looking and faults ----------------------------------------------------------------------

    def live_ports(self) -> list[int]:
        """The ports of the nodes still running."""
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def master_ports(self) -> list[int]:
        """The ports of the masters, as the first live node sees them."""
        out = []
        for port in self.live_ports():
            for line in command(port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if len(fields) > 2 and "master" in fields[2] and "fail" not in fields[2]:
                    out.append(int(fields[1].split("@")[0].rpartition(":")[2]))
            if out:
                return sorted(out)
        return []

    def replica_of(self, master_port: int) -> int:
        """The port of a replica of the master at ``master_port``."""
        ids = self.node_ids()
        master_id = ids[master_port]
        for line in command(self.live_ports()[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) > 3 and "slave" in fields[2] and fields[3] == master_id:
                return int(fields[1].split("@")[0].rpartition(":")[2])
        raise RuntimeError(f"the master at {master_port} has no replica")

    def freeze(self, port: int) -> None:
        """SIGSTOP one node (it keeps its sockets, answers nothing); :meth:`thaw` it after."""
        self.procs[port].send_signal(signal.SIGSTOP)

    def thaw(self, port: int) -> None:
        """SIGCONT a node stopped by :meth:`freeze`."""
        self.procs[port].send_signal(signal.SIGCONT)

    def node_ids(self) -> dict[int, str]:
        """Port -> cluster node id, as the first live node sees them."""
        out = {}
        for line in command(self.live_ports()[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            out[int(fields[1].split("@")[0].rpartition(":")[2])] = fields[0]
        return out

    def slot_owner(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        client = self.client(self.live_ports()[0])
        try:
            for row in client.execute_command("CLUSTER", "SLOTS"):
                if row[0] <= slot <= row[1]:
                    return int(row[2][1])
        finally:
            client.close()
        raise RuntimeError(f"no master serves slot {slot}")

    def migrate_slot(self, slot: int, to_port: int) -> None:
        """Move ``slot`` (and its keys) from its master to the master at ``to_port``, as
        ``redis-cli --cluster reshard`` does: IMPORTING, MIGRATING, MIGRATE, then NODE."""
        source = self.slot_owner(slot)
        ids = self.node_ids()
        command(to_port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[source])
        command(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[to_port])
        while True:
            keys = command(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split()
            if not keys:
                break
            command(source, "MIGRATE", LOOPBACK, str(to_port), "", "0", "5000", "KEYS", *keys)
        # The new owner first, then the old one, then the rest (CLUSTER SETSLOT's advice).
        others = [p for p in self.master_ports() if p not in (to_port, source)]
        for port in [to_port, source, *others]:
            command(port, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[to_port])

    def kill(self, port: int) -> None:
        """SIGKILL one node."""
        proc = self.procs[port]
        proc.kill()
        proc.wait(timeout=5)

    def client(self, port: int) -> Any:
        """A synchronous redis-py client of one node (the caller closes it)."""
        import redis

        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls = {"ssl": True, "ssl_ca_certs": str(self.tls["ca.crt"])}
        return redis.Redis(
            host=LOOPBACK, port=port, socket_timeout=2.0, password=self.password, **tls
        )

    def logs(self, port: int) -> str:
        try:
            return (self.workdir / str(port) / "redis.log").read_text(errors="replace")
        except OSError:
            return ""
