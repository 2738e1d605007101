"""Extra RabbitMQ nodes on this machine, beside its own broker, for fault tests and benches.

    python -m loadtest.cluster up [--nodes 3] [--dir DIR] [--management]
    python -m loadtest.cluster status [--dir DIR]
    python -m loadtest.cluster down [--dir DIR]

Each node (`flt-<tag>-<i>@localhost`) has its own AMQP and distribution ports, its own
config, data and log directories under one temporary folder, and no plugin unless asked
(so no management or Prometheus listener collides with the machine's own). All share one
Erlang cookie, kept in a HOME of their own (mode 0400), which the CLI tools get too: they
can only ever authenticate to these nodes. Nodes 2..n join node 1 (`stop_app`,
`join_cluster`, `start_app`); readiness is awaited with `rabbitmqctl wait` (the node's pid
file) and `await_online_nodes`, not by sleeping.

The machine's own node is never touched: every operation goes through `guard`, which
refuses any node not named `flt-...` and the machine's ports, and the scripts are the
package's own (`/usr/lib/rabbitmq/bin`), not the `/usr/sbin` wrappers (run as root, those
`su` to the rabbitmq user and would carry the machine's cookie). epmd is shared, which is
harmless: it only maps names to ports.

Kill = SIGKILL of the node's Erlang VM (beam.smp, found by the node name in its
environment); graceful stop = `rabbitmqctl shutdown`. A `Cluster` made in a process kills
its nodes at exit (atexit) unless it was started detached by `up`.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flotilla.brokerheal import DeadLetterDoctor

PACKAGE_BIN = Path("/usr/lib/rabbitmq/bin")  # the Debian package's scripts, unwrapped
# The machine broker's AMQP(S), management, Prometheus and distribution ports, and epmd's.
MACHINE_PORTS = frozenset({5672, 5671, 15672, 15692, 25672, 4369})
NODE_PREFIX = "flt-"
STATE_FILE = "cluster.json"
DEFAULT_DIR = Path(tempfile.gettempdir()) / "flotilla-cluster"


class ClusterError(RuntimeError):
    """An extra node did not start, join or stop, or an operation was refused."""


class MachineBrokerError(ClusterError):
    """An operation would have touched the machine's own RabbitMQ node: refused."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine_node_names() -> set[str]:
    """Names the machine's own node may have (its default and its rabbitmq-env.conf's)."""
    host = socket.gethostname()
    names = {"rabbit@localhost", f"rabbit@{host}", f"rabbit@{host.split('.')[0]}"}
    conf = Path("/etc/rabbitmq/rabbitmq-env.conf")
    if conf.exists():
        for line in conf.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("NODENAME", "RABBITMQ_NODENAME") and value.strip():
                name = value.strip().strip("'\"")
                names.add(name if "@" in name else f"{name}@{host}")
    return names


def guard(node: str, *ports: int) -> None:
    """Refuse (MachineBrokerError) unless `node` is one of ours and no port is the machine's."""
    if not node.startswith(NODE_PREFIX) or node in machine_node_names():
        raise MachineBrokerError(f"refusing to operate on node {node!r}: not an extra node")
    taken = sorted(set(ports) & MACHINE_PORTS)
    if taken:
        raise MachineBrokerError(f"refusing port(s) {taken}: the machine's own broker uses them")


def package_bin() -> Path:
    """Directory of the real rabbitmq-server and rabbitmqctl scripts (ClusterError if none)."""
    candidates = [Path(os.environ["FLOTILLA_RABBITMQ_BIN"])] if os.environ.get(
        "FLOTILLA_RABBITMQ_BIN") else []
    candidates.append(PACKAGE_BIN)
    server = shutil.which("rabbitmq-server")
    if server:
        candidates.append(Path(os.path.realpath(server)).parent)
    for path in candidates:
        script = path / "rabbitmq-server"
        if script.exists() and "su rabbitmq" not in script.read_text(errors="replace"):
            return path
    raise ClusterError("RabbitMQ is not installed (no rabbitmq-server script found)")


@dataclass
class Node:
    """One extra node: its name, ports and directory."""

    name: str
    amqp_port: int
    dist_port: int
    dir: str
    management_port: int = 0  # 0: no management plugin

    @property
    def url(self) -> str:
        """Its AMQP URL (guest/guest is allowed: clients connect over loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def pid_file(self) -> Path:
        """Where the node writes its OS pid once it boots."""
        return Path(self.dir) / "pid"


@dataclass
class Cluster:
    """`size` extra RabbitMQ nodes under `root`, clustered once `up` returns."""

    size: int = 3
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="flt-rabbit-")))
    management: bool = False
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    nodes: list[Node] = field(default_factory=list)
    startup_s: float = 0.0  # how long `up` took
    detached: bool = False  # started by the script: the nodes outlive the process
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.nodes:
            self.nodes = [self._new_node(i) for i in range(1, self.size + 1)]

    def _new_node(self, i: int) -> Node:
        name = f"{NODE_PREFIX}{self.tag}-{i}@localhost"
        mgmt = free_port() if self.management else 0
        node = Node(name, free_port(), free_port(), str(self.root / f"n{i}"), mgmt)
        guard(node.name, node.amqp_port, node.dist_port, node.management_port)
        return node

    @property
    def urls(self) -> list[str]:
        """AMQP URLs of every node, node 1 first."""
        return [n.url for n in self.nodes]

    @property
    def home(self) -> Path:
        """The HOME of the nodes and their CLI: it holds the shared Erlang cookie."""
        return self.root / "home"

    def node(self, name_or_index: str | int) -> Node:
        """A node by name or by 1-based index."""
        if isinstance(name_or_index, int):
            return self.nodes[name_or_index - 1]
        for n in self.nodes:
            if n.name == name_or_index:
                return n
        raise ClusterError(f"no node {name_or_index!r} in this cluster")

    # -- files and environment ---------------------------------------------------------

    def _prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)
        # Our own (empty) rabbitmq-env.conf: the machine's sets NODENAME=rabbit@localhost.
        (self.root / "rabbitmq-env.conf").write_text("")
        plugins = "[rabbitmq_management]." if self.management else "[]."
        (self.root / "enabled_plugins").write_text(plugins + "\n")
        for node in self.nodes:
            d = Path(node.dir)
            (d / "log").mkdir(parents=True, exist_ok=True)
            (d / "data").mkdir(parents=True, exist_ok=True)
            conf = [f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}", "log.console = false"]
            if self.size >= 3:  # what the Kubernetes cluster operator sets too
                conf.append("cluster_partition_handling = pause_minority")
            if node.management_port:
                conf += [f"management.tcp.port = {node.management_port}",
                         "management.tcp.ip = 127.0.0.1"]
            (d / "rabbitmq.conf").write_text("\n".join(conf) + "\n")

    def env(self, node: Node) -> dict[str, str]:
        """Environment of `node`'s server and of the CLI tools aimed at it."""
        d = Path(node.dir)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RABBITMQ_", "ERL_"))}  # nothing of the caller's
        env.update({
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_MNESIA_BASE": str(d / "data"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(node.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })  # fmt: skip
        return env

    # -- CLI ---------------------------------------------------------------------------

    def ctl(self, node: Node | str | int, *args: str, tool: str = "rabbitmqctl",
            timeout: float = 120) -> str:
        """Run a CLI tool (rabbitmqctl, rabbitmq-diagnostics, rabbitmq-queues) against one
        of our nodes; its stdout. ClusterError with its output when it fails."""
        n = node if isinstance(node, Node) else self.node(node)
        guard(n.name, n.amqp_port, n.dist_port)
        cmd = [str(package_bin() / tool), "-n", n.name, *args]
        try:
            done = subprocess.run(cmd, env=self.env(n), capture_output=True, timeout=timeout,
                                  check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"{' '.join(cmd[1:])}: no answer in {timeout:.0f} s") from exc
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace")[-1500:]
            raise ClusterError(f"{tool} {' '.join(cmd[1:])} failed ({done.returncode}): {out}")
        return done.stdout.decode(errors="replace")

    # -- lifecycle ---------------------------------------------------------------------

    def up(self, *, detached: bool = False) -> float:
        """Start every node, join them into one cluster, wait until all run; the seconds it
        took. Kills them at exit unless `detached` (the script's `up`)."""
        started = time.monotonic()
        self._prepare()
        self.detached = detached
        if not detached:
            atexit.register(self.kill_all)
        for node in self.nodes:
            self._spawn(node)
        try:
            for node in self.nodes:
                self._await_boot(node)
            seed = self.nodes[0]
            for node in self.nodes[1:]:
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", seed.name)
                self.ctl(node, "start_app")
            self.ctl(seed, "await_online_nodes", str(self.size), "--timeout", "120")
        except BaseException:
            self.down()
            raise
        self.startup_s = time.monotonic() - started
        self.save()
        return self.startup_s

    def _spawn(self, node: Node) -> None:
        guard(node.name, node.amqp_port, node.dist_port, node.management_port)
        node.pid_file.unlink(missing_ok=True)  # `wait` must not read a dead VM's pid
        log = (Path(node.dir) / "log" / "server.out").open("ab")
        # In our process group (a kill of the test run's group takes the nodes with it),
        # unless detached by the script's `up`, whose nodes must outlive it.
        self._procs[node.name] = subprocess.Popen(
            [str(package_bin() / "rabbitmq-server")], env=self.env(node), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=self.detached,
            cwd=node.dir,
        )
        log.close()

    def _await_boot(self, node: Node, timeout: float = 120) -> None:
        """Wait until `node` runs the rabbit app (its pid file, then the app: events)."""
        try:
            self.ctl(node, "wait", str(node.pid_file), "--timeout", str(int(timeout)),
                     timeout=timeout + 10)
        except ClusterError as exc:
            raise ClusterError(f"{exc}\n{node.name} log: {self.log_tail(node)}") from None

    def start(self, node: Node | str | int) -> float:
        """Start a stopped or killed node again (it rejoins from its own data); seconds
        until it runs."""
        n = node if isinstance(node, Node) else self.node(node)
        began = time.monotonic()
        self._spawn(n)
        self._await_boot(n)
        return time.monotonic() - began

    def stop(self, node: Node | str | int) -> None:
        """Stop a node gracefully (`rabbitmqctl shutdown`: the VM exits when done)."""
        n = node if isinstance(node, Node) else self.node(node)
        self.ctl(n, "shutdown")
        proc = self._procs.get(n.name)
        if proc is not None:
            proc.wait(60)

    def kill(self, node: Node | str | int) -> int:
        """SIGKILL the node's Erlang VM, as a crash or OOM kill would; its pid."""
        n = node if isinstance(node, Node) else self.node(node)
        pid = beam_pid(n.name)
        if pid is None:
            raise ClusterError(f"{n.name} has no running Erlang VM")
        os.kill(pid, signal.SIGKILL)
        proc = self._procs.get(n.name)
        if proc is not None:
            proc.wait(60)  # the start script exits with its VM
        return pid

    def heal(self) -> None:
        """Bring every node that was stopped or killed back (a shared cluster stays whole)."""
        running = set(self.running_nodes())
        for node in self.nodes:
            if node.name in running:
                continue
            if beam_pid(node.name) is not None:  # the VM runs, the app was stopped
                self.ctl(node, "start_app")
            else:
                self.start(node)

    def running_nodes(self, via: Node | str | int | None = None) -> list[str]:
        """Nodes the cluster says are running (asked of `via`, else the first that answers)."""
        for n in [via] if via is not None else self.nodes:
            try:
                status = json.loads(self.ctl(n, "cluster_status", "--formatter", "json",
                                             timeout=30))
            except (ClusterError, ValueError):
                continue
            return list(status.get("running_nodes", []))
        return []

    def queue_leaders(self, prefix: str = "") -> dict[str, str]:
        """Quorum queue name -> node leading it, for queues whose name starts with `prefix`."""
        for n in self.nodes:
            if beam_pid(n.name) is None:
                continue
            try:
                out = self.ctl(n, "list_queues", "name", "leader", "type",
                               "--formatter", "json", "-q", timeout=30)
            except ClusterError:
                continue
            return {q["name"]: q["leader"] for q in json.loads(out)
                    if q["name"].startswith(prefix) and q.get("type") == "quorum"}
        return {}

    def queue_depths(self, prefix: str = "") -> dict[str, int]:
        """Queue name -> messages in it (ready and unacknowledged), for queues whose name
        starts with `prefix` and that hold any (asked of the first running node)."""
        for n in self.nodes:
            if beam_pid(n.name) is None:
                continue
            try:
                out = self.ctl(n, "list_queues", "name", "messages", "--formatter", "json",
                               "-q", timeout=30)
            except ClusterError:
                continue
            return {q["name"]: int(q["messages"]) for q in json.loads(out)
                    if q["name"].startswith(prefix) and q.get("messages")}
        return {}

    def ctl_any(self, *args: str) -> str:
        """rabbitmqctl with `args`, asked of the first running node that answers (the
        `Ctl` of flotilla.brokerheal); BrokerCtlError when none does."""
        from flotilla.brokerheal import BrokerCtlError

        failures = []
        for n in self.nodes:
            if beam_pid(n.name) is None:
                continue
            try:
                return self.ctl(n, *args, timeout=30)
            except ClusterError as exc:
                failures.append(str(exc)[-300:])
        raise BrokerCtlError("no node answered: " + ("; ".join(failures) or "none running"))

    def doctor(self, prefix: str, **options: Any) -> DeadLetterDoctor:
        """Flotilla's dead-letter doctor (flotilla/brokerheal.py) for these nodes."""
        from flotilla.brokerheal import DeadLetterDoctor

        return DeadLetterDoctor(self.ctl_any, prefix=prefix, **options)

    def transfer_leadership(self, queue: str, to: Node | str | int, vhost: str = "/") -> str:
        """Make `to` the leader of quorum queue `queue` (flotilla.brokerheal's transfer, asked
        of `to`); the node leading it after. ClusterError when the queue is unknown or the
        transfer is refused."""
        from flotilla.brokerheal import BrokerCtlError, transfer_leadership

        n = to if isinstance(to, Node) else self.node(to)
        try:
            return transfer_leadership(lambda *args: self.ctl(n, *args, timeout=30), queue,
                                       n.name, vhost)
        except BrokerCtlError as exc:
            raise ClusterError(str(exc)) from exc

    def log_tail(self, node: Node, size: int = 1500) -> str:
        """The end of a node's server log."""
        logs = sorted((Path(node.dir) / "log").glob("*.log"))
        path = logs[0] if logs else Path(node.dir) / "log" / "server.out"
        try:
            return path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def kill_all(self) -> None:
        """SIGKILL every node's VM and start script (teardown: nothing of them survives;
        the VM's helper processes exit with it)."""
        for node in self.nodes:
            pid = beam_pid(node.name)  # also finds a VM that another process started
            if pid is not None:
                _kill(pid)
            proc = self._procs.pop(node.name, None)
            if proc is not None:
                _kill(proc.pid)
                proc.wait(30)

    def down(self) -> None:
        """Kill every node and delete the folder (data, logs, cookie)."""
        self.kill_all()
        atexit.unregister(self.kill_all)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- state (for the script: `up` in one process, `down` in another) ---------------

    def save(self) -> None:
        """Write the nodes' description to `root/cluster.json`."""
        state = {"size": self.size, "tag": self.tag, "management": self.management,
                 "startup_s": self.startup_s, "nodes": [asdict(n) for n in self.nodes]}
        (self.root / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> Cluster:
        """The cluster described in `root/cluster.json` (ClusterError if there is none)."""
        try:
            state: dict[str, Any] = json.loads((root / STATE_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ClusterError(f"no cluster in {root}: {exc}") from None
        nodes = [Node(**n) for n in state["nodes"]]
        for n in nodes:
            guard(n.name, n.amqp_port, n.dist_port, n.management_port)
        return cls(size=state["size"], root=root, management=state["management"],
                   tag=state["tag"], nodes=nodes, startup_s=state["startup_s"], detached=True)


def beam_pid(node: str) -> int | None:
    """The pid of the Erlang VM running `node` (found by RABBITMQ_NODENAME in its
    environment: this process's nodes only, never another's), or None."""
    guard(node)
    needle = f"RABBITMQ_NODENAME={node}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "beam.smp":
                continue
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue
    return None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    """`python -m loadtest.cluster up|down|status`."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--nodes", type=int, default=3, choices=(1, 3, 5))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"folder of the cluster's files (default {DEFAULT_DIR})")
    parser.add_argument("--management", action="store_true",
                        help="enable the management plugin on free ports")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            if (args.dir / STATE_FILE).exists():
                raise ClusterError(f"a cluster is already described in {args.dir}: down first")
            args.dir.mkdir(parents=True, exist_ok=True)
            cluster = Cluster(args.nodes, root=args.dir, management=args.management)
            seconds = cluster.up(detached=True)
            print(f"up in {seconds:.1f} s")
            _print_status(cluster)
        elif args.command == "status":
            _print_status(Cluster.load(args.dir))
        else:
            Cluster.load(args.dir).down()
            print(f"down: {args.dir} deleted")
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_status(cluster: Cluster) -> None:
    running = set(cluster.running_nodes())
    for n in cluster.nodes:
        state = "running" if n.name in running else (
            "vm up" if beam_pid(n.name) else "down")
        mgmt = f" management http://127.0.0.1:{n.management_port}/" if n.management_port else ""
        print(f"{n.name:28} {state:8} {n.url}{mgmt}")
    print("FLOTILLA_AMQP_URL=" + ",".join(cluster.urls))


if __name__ == "__main__":
    sys.exit(main())
