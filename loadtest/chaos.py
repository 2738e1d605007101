"""Faults under load on a three-node RabbitMQ cluster, with nothing lost: `flotilla bench chaos`.

Starts three extra RabbitMQ nodes (loadtest.cluster), a private Redis on a free port (no
persistence, like the machine's: never the machine's own), moto, two dispatchers and two
workers (loadtest.soak.Fleet) given every node's URL and FLOTILLA_QUORUM_SIZE=3, deploys the
WAT echo, the probe guest and the flaky guest (with a retry policy), and drives a steady
mixed load while the faults happen one after another, each followed by a quiet stretch of
load:

- `leader-kill`: SIGKILL of the node leading the sync lane, after the leadership of every
  other queue the load goes through (job lanes, job results) was moved to it (the worst
  case), then restart; `follower-stop`: graceful stop of the node leading the fewest of
  them, then start. All along, Flotilla's dead-letter doctor (`flotilla broker heal
  --watch`, flotilla/brokerheal.py) sweeps the cluster every few seconds and restarts the
  dead-letter workers RabbitMQ 3.10.8 leaves stopped after a leader dies; without it
  (`heal=False`) the delay chain holds delayed jobs and retries until a leader changes;
- `redis-restart`: the private Redis restarts empty; the bench then does what the operator's
  runbook says (docs/reliability.md): deploy the functions again;
- `dispatcher-kill`: SIGKILL of one dispatcher while callers wait on it, then restart;
- `worker-kill`: SIGKILL of one worker mid-invocation, then restart.

The load goes through the public HTTP API and the Python client (no queue names); only the
choice of the node to kill reads the topology's names (flotilla.topology). Load: HTTP
callers spread over both dispatchers, Python client callers (AMQP), job submitters; every
call and job carries a unique token that its reply must return (a *wrong reply* carries
another or none); every tenth call is slow (the probe sleeps 300 ms; a `read_file` of a path
naming the token brings the token back in its error). Jobs: of every ten a submitter sends,
one is a job of the flaky guest (fails its first run, retried by its policy through the
delay chain) and one an echo job delayed 2-5 s (the delay chain); all are read back
continuously until each shows a final status.

Figures: accepted jobs, lost jobs (never final), wrong job results, duplicate results (a job
run twice to completion: the dispatchers log the ignored second result), sync calls by
outcome (ok, wrong, retryable 503/504, connection error, other), and per fault the recovery
time (from the fault to the end of the first successful call started after it) and the
disruption (to the end of the last call that failed after it, before the next fault).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from flotilla.topology import JOBS_INFIX, Topology
from loadtest.cluster import Cluster, ClusterError, free_port
from loadtest.soak import PROBE_APP, ROOT, Fleet, deploy

FAULTS = ("leader-kill", "follower-stop", "redis-restart", "dispatcher-kill", "worker-kill")
DISPATCHERS = ("dispatcher-a", "dispatcher-b")
WORKERS = ("worker-a", "worker-b")
RETRYABLE = (503, 504)
NOT_FINAL = ("scheduled", "queued", "running", "retrying")
# A guest failing its first run (a cache counter per job: tests/guests/python/flaky), and the
# retry policy that runs it again. Four attempts: a Redis restart between two runs resets the
# counter once, so the third succeeds at the latest.
FLAKY_APP = ROOT / "tests" / "guests" / "python" / "flaky" / "app.py"
FLAKY_RETRY = {"max_attempts": 4, "backoff_ms": 400, "backoff_max_ms": 1_500, "on": ["trap"]}
JOB_KINDS = ("echo", "retried", "delayed")
# Jobs accepted this long before a Redis restart may be forgotten by it (see `report`).
REDIS_FORGETS_S = 2.0


@dataclass
class Plan:
    """How hard and how long to push, and which faults."""

    faults: tuple[str, ...] = FAULTS
    steady_s: float = 6.0  # load before the first fault and after each
    outage_s: float = 4.0  # how long a killed or stopped part stays down
    http_callers: int = 4
    client_callers: int = 2
    job_submitters: int = 2
    job_pause_s: float = 0.03  # between one submitter's jobs
    # Of every `job_cycle` jobs a submitter sends, one is a job of the flaky function (fails
    # its first attempt, retried through the delay chain) and one an echo job due 2-5 s
    # later (delay chain); the others are plain echo jobs.
    job_cycle: int = 10
    delay_ms: tuple[int, int] = (2_000, 5_000)
    slow_every: int = 10
    slow_ms: int = 300
    min_jobs: int = 500
    min_sync: int = 500
    max_extra_s: float = 120.0  # load kept after the faults until the minimums are reached
    drain_s: float = 90.0  # how long accepted jobs may take to finish at the end
    # Run the dead-letter doctor beside the fleet (restarts stopped dead-letter workers);
    # off, the bench shows what RabbitMQ 3.10.8 does without it (delayed jobs and retries
    # stuck). It sweeps every `heal_interval_s` (each sweep looks twice, 2 s apart).
    heal: bool = True
    heal_interval_s: float = 5.0
    worker_concurrency: int = 2


@dataclass
class Call:
    """One synchronous call: when it started and ended, and how it went."""

    t0: float
    t1: float
    outcome: str  # ok | wrong | retryable | connection | status <n> | <exception name>

    @property
    def ok(self) -> bool:
        """A correct reply."""
        return self.outcome == "ok"


@dataclass
class Tally:
    """What the load saw."""

    calls: list[Call] = field(default_factory=list)
    jobs: dict[str, bytes] = field(default_factory=dict)  # accepted: job id -> token
    accepted_at: dict[str, float] = field(default_factory=dict)  # job id -> when
    due_at: dict[str, float] = field(default_factory=dict)  # job id -> when it may first run
    kinds: dict[str, str] = field(default_factory=dict)  # job id -> one of JOB_KINDS
    last_seen: dict[str, str] = field(default_factory=dict)  # job id -> last status read
    heal_moves: list[str] = field(default_factory=list)  # what the doctor moved, and when
    heal_restarted: int = 0  # queues whose leadership it moved (dead-letter worker restarted)
    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> final document
    wrong_jobs: list[str] = field(default_factory=list)
    refused_jobs: Counter[str] = field(default_factory=Counter)
    marks: list[tuple[str, float]] = field(default_factory=list)  # fault, when it began
    notes: dict[str, str] = field(default_factory=dict)  # fault -> what was hit
    samples: dict[str, list[str]] = field(default_factory=dict)  # "fault: outcome" -> answers


class RedisServer:
    """A private redis-server (no persistence, like the machine's) on a free port."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        if self.port == 6379:
            raise ClusterError("refusing port 6379: the machine's own Redis")
        self.dir = Path(tempfile.mkdtemp(prefix="flt-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        import redis

        if shutil.which("redis-server") is None:
            raise ClusterError("redis-server is not installed")
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        end = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise ClusterError(f"redis-server on {self.port} did not start") from None
                time.sleep(0.05)  # no readiness event to wait on but the port answering
        client.close()

    def stop(self) -> None:
        """SIGTERM (it saves nothing: --save ""), and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
        self.proc = None

    def restart(self) -> None:
        """Stop, then start on the same port: it comes back empty."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop it and delete its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Chaos:
    """The load and the faults over one running fleet (see the module docstring)."""

    def __init__(self, plan: Plan, fleet: Fleet, cluster: Cluster, redis: RedisServer,
                 components: dict[str, tuple[bytes, dict[str, Any]]]) -> None:
        self.plan, self.fleet, self.cluster, self.redis = plan, fleet, cluster, redis
        self.components = components
        self.tally = Tally()
        self.stop = asyncio.Event()
        self.extra = ("--quorum-size", "3")
        self.http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64))

    # -- load ---------------------------------------------------------------------------

    def _url(self, i: int) -> str:
        return self.fleet.urls[DISPATCHERS[i % len(DISPATCHERS)]]

    def _request(self, n: int, token: str) -> tuple[str, bytes]:
        """(function, body) of call `n`: every `slow_every`th is slow."""
        if n % self.plan.slow_every:
            return "echo", token.encode()
        ops = [{"op": "wall_sleep", "ms": self.plan.slow_ms}, {"op": "read_file", "path": f"/{token}"}]
        return "probe", json.dumps({"op": "batch", "ops": ops}).encode()

    def _judge(self, function: str, status: int, body: bytes, token: str) -> str:
        if status in RETRYABLE:
            return "retryable"
        if status != 200:
            return f"status {status}"
        if function == "echo":
            return "ok" if body == token.encode() else "wrong"
        return "ok" if token.encode() in body else "wrong"

    def _sample(self, outcome: str, text: str) -> None:
        """Keep the first few answers of each kind of failure, per fault (for the report)."""
        fault = self.tally.marks[-1][0] if self.tally.marks else "before faults"
        samples = self.tally.samples.setdefault(f"{fault}: {outcome}", [])
        if len(samples) < 3:
            samples.append(text[:300])

    async def http_caller(self, i: int) -> None:
        """Synchronous calls over HTTP to one dispatcher (the one `i` picks)."""
        n = 0
        while not self.stop.is_set():
            token = f"h{i}-{n}-{uuid.uuid4().hex[:8]}"
            function, body = self._request(n, token)
            t0 = time.monotonic()
            try:
                r = await self.http.post(f"{self._url(i)}/v1/functions/{function}/invoke",
                                         content=body)
                outcome = self._judge(function, r.status_code, r.content, token)
                if outcome != "ok":
                    self._sample(outcome, r.text)
            except httpx.HTTPError as exc:
                outcome = "connection"
                self._sample(outcome, repr(exc))
            self.tally.calls.append(Call(t0, time.monotonic(), outcome))
            if outcome != "ok":
                await asyncio.sleep(0.05)  # a caller retrying: a short pause, not a spin
            n += 1

    async def client_caller(self, i: int) -> None:
        """Synchronous calls through the Python client (AMQP, every node's URL)."""
        from flotilla.client import Client
        from flotilla.errors import ApiError

        async with Client(self.fleet.amqp_url, queue_prefix=self.fleet.prefix,
                          redis_url=self.redis.url) as client:
            n = 0
            while not self.stop.is_set():
                token = f"c{i}-{n}-{uuid.uuid4().hex[:8]}"
                function, body = self._request(n, token)
                t0 = time.monotonic()
                try:
                    reply = await client.invoke(function, body, timeout=10)
                    outcome = self._judge(function, reply.status, reply.body, token)
                except ApiError as exc:
                    outcome = "retryable" if exc.status in RETRYABLE else f"status {exc.status}"
                    self._sample(outcome, f"client: {exc}")
                except Exception as exc:  # noqa: BLE001 - any other failure is an outcome
                    outcome = type(exc).__name__
                    self._sample(outcome, f"client: {exc!r}")
                self.tally.calls.append(Call(t0, time.monotonic(), outcome))
                if outcome != "ok":
                    await asyncio.sleep(0.05)
                n += 1

    def _job(self, n: int, token: str) -> tuple[str, str, bytes, int]:
        """(kind, function, body, delay_ms) of job `n` (see `Plan.job_cycle`)."""
        phase = n % self.plan.job_cycle
        if phase == 3:
            # The counter key is the token: each job fails its first run, whatever others do.
            return "retried", "flaky", json.dumps({"key": token, "succeed_at": 2}).encode(), 0
        if phase == 7:
            low, high = self.plan.delay_ms
            return "delayed", "echo", token.encode(), low + (n * 7919) % (high - low + 1)
        return "echo", "echo", token.encode(), 0

    async def submitter(self, i: int) -> None:
        """Jobs over HTTP; each accepted one is remembered with its token and kind."""
        n = 0
        while not self.stop.is_set():
            token = f"j{i}-{n}-{uuid.uuid4().hex[:8]}"
            kind, function, body, delay_ms = self._job(n, token)
            params = {"delay_ms": str(delay_ms)} if delay_ms else {}
            try:
                r = await self.http.post(f"{self._url(i)}/v1/functions/{function}/jobs",
                                         content=body, params=params)
                if r.status_code == 202:
                    job_id = r.json()["job_id"]
                    now = time.monotonic()
                    self.tally.jobs[job_id] = token.encode()
                    self.tally.accepted_at[job_id] = now
                    self.tally.due_at[job_id] = now + delay_ms / 1000
                    self.tally.kinds[job_id] = kind
                else:
                    self.tally.refused_jobs[f"status {r.status_code}"] += 1
            except httpx.HTTPError as exc:
                self.tally.refused_jobs[type(exc).__name__] += 1
            n += 1
            await asyncio.sleep(self.plan.job_pause_s)

    async def reader(self) -> None:
        """Read every unfinished job back until it is final (continuously: a Redis restart
        forgets results nobody read yet, see docs/reliability.md)."""
        gate = asyncio.Semaphore(8)
        while True:
            pending = [j for j in self.tally.jobs if j not in self.tally.done]
            if not pending and self.stop.is_set():
                return
            await asyncio.gather(*(self._read(j, gate) for j in pending))
            await asyncio.sleep(0.05)

    async def _read(self, job_id: str, gate: asyncio.Semaphore) -> None:
        async with gate:
            for i in range(len(DISPATCHERS)):
                try:
                    r = await self.http.get(f"{self._url(i)}/v1/jobs/{job_id}", timeout=5)
                except httpx.HTTPError:
                    continue  # that dispatcher is down: ask the other
                if r.status_code != 200:
                    self.tally.last_seen[job_id] = f"status {r.status_code}"
                    return  # 404 after a Redis restart: the result may still come
                doc = r.json()
                self.tally.last_seen[job_id] = str(doc.get("status"))
                if doc.get("status") not in NOT_FINAL:
                    self.tally.done[job_id] = doc
                    if doc.get("status") != "succeeded":
                        self._sample(f"job {doc.get('status')}", json.dumps(doc))
                    elif not self._right_result(job_id, doc):
                        self.tally.wrong_jobs.append(job_id)
                        self._sample("wrong job result", json.dumps(doc))
                return

    def _right_result(self, job_id: str, doc: dict[str, Any]) -> bool:
        """An echo job answers its own token; a flaky one succeeds only after a failed run
        (its counter, keyed by the token, is at least 2)."""
        body = _job_body(doc)
        if self.tally.kinds.get(job_id) != "retried":
            return body == self.tally.jobs[job_id]
        try:
            answer = json.loads(body or b"")
        except ValueError:
            return False
        return isinstance(answer, dict) and int(answer.get("runs", 0)) >= 2

    # -- faults -------------------------------------------------------------------------

    async def fault(self, name: str) -> None:
        """Apply one fault, keep it for `outage_s`, then undo it (restart what died)."""
        self.tally.marks.append((name, time.monotonic()))
        run: dict[str, Callable[[], Awaitable[None]]] = {
            "leader-kill": self._leader_kill, "follower-stop": self._follower_stop,
            "redis-restart": self._redis_restart, "dispatcher-kill": self._dispatcher_kill,
            "worker-kill": self._worker_kill,
        }
        await run[name]()

    def _carries_load(self, queue: str) -> bool:
        """Whether `queue` carries the load: the sync lane, a job lane, the job results (not
        the dead letters nor the delay chain, which the load only crosses)."""
        topology = Topology(self.fleet.prefix)
        return queue in (topology.sync, topology.job_results) or JOBS_INFIX in queue

    def _ranked_nodes(self) -> list[tuple[int, int, str]]:
        """(load queues led, quorum queues led, node) for every node, most first."""
        leaders = self.cluster.queue_leaders(self.fleet.prefix)
        load = Counter(n for q, n in leaders.items() if self._carries_load(q))
        every = Counter(leaders.values())
        return sorted(((load[n.name], every[n.name], n.name) for n in self.cluster.nodes),
                      reverse=True)

    def _gather_load(self) -> str:
        """Move the leadership of every load queue to the node leading the sync lane (the
        worst case: every queue the load goes through loses its leader at once); what that
        node leads now."""
        sync = Topology(self.fleet.prefix).sync
        leaders = self.cluster.queue_leaders(self.fleet.prefix)
        # A classic sync lane (FLOTILLA_SYNC_LANE) has no leader: the job lanes' then.
        target = leaders.get(sync) or self._ranked_nodes()[0][2]
        refused = []
        for queue, node in sorted(leaders.items()):
            if node != target and self._carries_load(queue):
                try:
                    self.cluster.transfer_leadership(queue, target)
                except ClusterError:
                    refused.append(queue)
        leaders = self.cluster.queue_leaders(self.fleet.prefix)
        led = sorted(q.removeprefix(self.fleet.prefix + ".") for q, n in leaders.items()
                     if n == target and self._carries_load(q))
        total = sum(1 for n in leaders.values() if n == target)
        note = f"{target} leading {', '.join(led)} ({total} of {len(leaders)} quorum queues)"
        return note + (f"; not moved: {', '.join(refused)}" if refused else "")

    async def _leader_kill(self) -> None:
        began = time.monotonic()
        note = await asyncio.to_thread(self._gather_load)
        note += f"; leadership gathered in {time.monotonic() - began:.1f} s"
        node = note.split(" ", 1)[0]
        # The fault begins with the kill, not with the preparation (recovery is counted
        # from here).
        self.tally.marks[-1] = ("leader-kill", time.monotonic())
        await asyncio.to_thread(self.cluster.kill, node)
        await asyncio.sleep(self.plan.outage_s)
        await asyncio.to_thread(self.cluster.start, node)
        self.tally.notes["leader-kill"] = note

    async def _follower_stop(self) -> None:
        ranked = await asyncio.to_thread(self._ranked_nodes)
        load, led, node = ranked[-1]
        self.tally.notes["follower-stop"] = (
            f"{node} (leading {load} load queues, {led} quorum queues)")
        await asyncio.to_thread(self.cluster.stop, node)
        await asyncio.sleep(self.plan.outage_s)
        await asyncio.to_thread(self.cluster.start, node)

    async def _redis_restart(self) -> None:
        began = time.monotonic()
        await asyncio.to_thread(self.redis.restart)
        # The runbook after a Redis that lost its data: deploy the same functions again
        # (same digests; the compiled artifacts are still in S3). API keys: see the docs.
        await self.deploy_all()
        self.tally.notes["redis-restart"] = (
            f"restart and redeploy took {time.monotonic() - began:.1f} s")

    async def _dispatcher_kill(self) -> None:
        name = DISPATCHERS[-1]
        self.tally.notes["dispatcher-kill"] = name
        await asyncio.to_thread(self.fleet.kill, name, signal.SIGKILL)
        await asyncio.sleep(self.plan.outage_s)
        await asyncio.to_thread(self.fleet.start_dispatcher, name, extra=self.extra)

    async def _worker_kill(self) -> None:
        name = WORKERS[-1]
        self.tally.notes["worker-kill"] = name
        await asyncio.to_thread(self.fleet.kill, name, signal.SIGKILL)
        await asyncio.sleep(self.plan.outage_s)
        await asyncio.to_thread(self.fleet.start_worker, name,
                                concurrency=self.plan.worker_concurrency, extra=self.extra)

    async def deploy_all(self) -> None:
        """Deploy every component through the first dispatcher."""
        async with httpx.AsyncClient(base_url=self._url(0), timeout=300) as client:
            for name, (wasm, config) in self.components.items():
                await deploy(client, name, wasm, config)

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> Tally:
        """Load, faults, more load until the minimums, then read every job back."""
        plan = self.plan
        load = [asyncio.create_task(self.http_caller(i)) for i in range(plan.http_callers)]
        load += [asyncio.create_task(self.client_caller(i)) for i in range(plan.client_callers)]
        load += [asyncio.create_task(self.submitter(i)) for i in range(plan.job_submitters)]
        reader = asyncio.create_task(self.reader())
        healing = threading.Event()
        doctor = self.cluster.doctor(self.fleet.prefix)
        watcher = threading.Thread(target=doctor.watch, args=(plan.heal_interval_s, healing),
                                   name="dead-letter-doctor", daemon=True)
        if plan.heal:
            watcher.start()
        try:
            await asyncio.sleep(plan.steady_s)
            for name in plan.faults:
                await self.fault(name)
                await asyncio.sleep(plan.steady_s)
            end = time.monotonic() + plan.max_extra_s
            while time.monotonic() < end and (
                len(self.tally.jobs) < plan.min_jobs or len(self.tally.calls) < plan.min_sync
            ):
                await asyncio.sleep(0.5)
        finally:
            self.stop.set()
            await asyncio.gather(*load, return_exceptions=True)
        try:
            await asyncio.wait_for(reader, plan.drain_s)
        except TimeoutError:
            pass  # what is still pending is lost: the report says so
        finally:
            healing.set()
            if plan.heal:
                await asyncio.to_thread(watcher.join, 60)
        begin = self.tally.marks[0][1] if self.tally.marks else 0.0
        self.tally.heal_restarted = sum(1 for move in doctor.moves if move.moved)
        for move in doctor.moves:
            after = [name for name, t in self.tally.marks if t <= move.at] or ["no fault"]
            self.tally.heal_moves.append(
                f"t={move.at - begin:.1f}s after {after[-1]}: "
                f"{move.queue.removeprefix(self.fleet.prefix + '.')} held {move.held}, "
                + (f"{move.leader} -> {move.to}" if move.moved else f"not moved: {move.reason}"))
        await self.http.aclose()
        return self.tally


def _job_body(doc: dict[str, Any]) -> bytes | None:
    import base64

    response = doc.get("response") or {}
    body = response.get("body")
    return base64.b64decode(body) if isinstance(body, str) else None


def report(tally: Tally, fleet_logs: list[Path], plan: Plan) -> dict[str, Any]:
    """The figures of a run (see the module docstring)."""
    outcomes = Counter(c.outcome for c in tally.calls)
    never_final = [j for j in tally.jobs if j not in tally.done]
    # A job accepted shortly before Redis restarted empty, never seen final: its record (and
    # its result, if it finished before the restart and was not read yet) was in Redis. No
    # broker fault is under way then (the previous one was healed `steady_s` earlier).
    restarts = [t for name, t in tally.marks if name == "redis-restart"]
    # A delayed job's record may be forgotten any time before it runs; the result it writes
    # then is readable (GET /v1/jobs answers from the result alone): only a result written
    # just before the restart can be missed, so the window is around its due time.
    forgotten = [j for j in never_final if any(
        t - REDIS_FORGETS_S <= tally.due_at.get(j, 0.0) <= t + 1.0 for t in restarts)]
    lost = [j for j in never_final if j not in forgotten]
    not_ok = Counter(str(d.get("status")) for d in tally.done.values()
                     if d.get("status") != "succeeded")
    duplicates = sum(p.read_bytes().count(b"ignoring duplicate result for job")
                     for p in fleet_logs)
    recovery: dict[str, float | None] = {}
    disruption: dict[str, float] = {}
    errors: dict[str, dict[str, int]] = {}
    bounds = [t for _, t in tally.marks[1:]] + [float("inf")]
    for (name, began), until in zip(tally.marks, bounds, strict=True):
        # A call belongs to the fault it started under, and its failure to the fault it
        # ended under (a call cut by the next fault is that fault's).
        started = [c for c in tally.calls if began <= c.t0 < until]
        failed = [c for c in tally.calls if not c.ok and began <= c.t1 < until]
        first_ok = min((c.t1 for c in started if c.ok), default=None)
        recovery[name] = None if first_ok is None else round(first_ok - began, 3)
        disruption[name] = round(max((c.t1 - began for c in failed), default=0.0), 3)
        errors[name] = dict(Counter(c.outcome for c in failed))
    return {
        "accepted_jobs": len(tally.jobs),
        "accepted_by_kind": dict(Counter(tally.kinds.values())),
        "final_by_kind": dict(Counter(tally.kinds[j] for j in tally.done)),
        "retried_attempts": dict(Counter(
            str(d.get("attempts")) for j, d in tally.done.items()
            if tally.kinds.get(j) == "retried")),
        "lost_jobs": len(lost),
        "lost_job_ids": lost[:20],
        "lost_by_kind": dict(Counter(tally.kinds.get(j, "?") for j in lost)),
        "lost_last_seen": dict(Counter(tally.last_seen.get(j, "never read") for j in lost)),
        "lost_accepted_s": [round(tally.accepted_at[j] - tally.marks[0][1], 2)
                            for j in lost[:20]] if tally.marks else [],
        "jobs_forgotten_by_redis_restart": len(forgotten),
        "wrong_job_results": len(tally.wrong_jobs),
        "jobs_not_succeeded": dict(not_ok),
        "refused_jobs": dict(tally.refused_jobs),
        "duplicate_results": duplicates,
        "dead_lettering_restarted": tally.heal_restarted,
        "dead_letter_doctor": tally.heal_moves,
        "sync_calls": len(tally.calls),
        "sync_ok": outcomes["ok"],
        "sync_wrong_replies": outcomes["wrong"],
        "sync_retryable": outcomes["retryable"],
        "sync_connection_errors": outcomes["connection"],
        "sync_other": {k: v for k, v in outcomes.items()
                       if k not in ("ok", "wrong", "retryable", "connection")},
        "recovery_s": recovery,
        "disruption_s": disruption,
        "errors_by_fault": errors,
        "faults": tally.notes,
        "error_samples": tally.samples,
        "plan": {"steady_s": plan.steady_s, "outage_s": plan.outage_s,
                 "http_callers": plan.http_callers, "client_callers": plan.client_callers,
                 "job_submitters": plan.job_submitters},
    }


async def run_chaos(plan: Plan, *, keep_logs: Path | None = None) -> dict[str, Any]:
    """Start the cluster, Redis and the fleet, run the faults under load, tear all down."""
    from flotilla.build import build_guest
    from flotilla.sandbox.guests import packaged

    cluster = Cluster(3)
    redis = RedisServer()
    fleet: Fleet | None = None
    started = time.monotonic()
    try:
        startup_s = await asyncio.to_thread(cluster.up)
        await asyncio.to_thread(redis.start)
        fleet = Fleet(",".join(cluster.urls), redis.url)
        extra = ("--quorum-size", "3")
        await asyncio.to_thread(fleet.start_moto)
        for name in DISPATCHERS:
            await asyncio.to_thread(fleet.start_dispatcher, name, extra=extra)
        for name in WORKERS:
            await asyncio.to_thread(fleet.start_worker, name,
                                    concurrency=plan.worker_concurrency, extra=extra)
        components: dict[str, tuple[bytes, dict[str, Any]]] = {
            "echo": (packaged("echo", fleet.cache_dir), {"timeout_ms": 5_000}),
            "probe": (build_guest(PROBE_APP).read_bytes(), {"timeout_ms": 5_000}),
            "flaky": (build_guest(FLAKY_APP).read_bytes(),
                      {"timeout_ms": 5_000, "retry": FLAKY_RETRY}),
        }
        chaos = Chaos(plan, fleet, cluster, redis, components)
        await chaos.deploy_all()
        ready_s = time.monotonic() - started
        tally = await chaos.run()
        # What the broker still holds (a job never final may be stuck in a queue rather than
        # lost): asked before the teardown.
        depths = await asyncio.to_thread(cluster.queue_depths, fleet.prefix)
        logs = [p for p in fleet.dir.glob("dispatcher-*.log")]
        result = report(tally, logs, plan)
        result["cluster_startup_s"] = round(startup_s, 1)
        result["fleet_ready_s"] = round(ready_s, 1)
        result["queues_at_end"] = depths
        if keep_logs is not None:
            shutil.copytree(fleet.dir, keep_logs, dirs_exist_ok=True)
        return result
    finally:
        if fleet is not None:
            await asyncio.to_thread(cluster.heal)  # the fleet's cleanup needs a broker
            await asyncio.to_thread(fleet.stop)
        redis.close()
        cluster.down()


def verdict(result: dict[str, Any]) -> list[str]:
    """What makes a run fail: a job lost, failed (the echo cannot fail) or answered with
    another's body, a wrong synchronous reply (empty when the run passed)."""
    problems = []
    for key in ("lost_jobs", "wrong_job_results", "jobs_not_succeeded", "sync_wrong_replies"):
        if result[key]:
            problems.append(f"{key}: {result[key]}")
    return problems
