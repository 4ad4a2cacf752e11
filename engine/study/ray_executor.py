"""``--executor ray``: ``RayExecutor``, a StackExecutor (engine/train/driver.py) that trains the study's stacks as
Ray tasks on a cluster (docs/cluster.md); results are written to the store here, by the driver, as they come.

Each task is a Ray generator: it trains one stack in a thread and streams what its runs' sinks hear (start, every
epoch, finish with the checkpoint bytes) back to the driver, which writes each event into the run's ``StoreSink``
right away. So Ray's nodes need no shared filesystem and no store, and Curves and the jobs panel see the epochs of
a run while it trains, as for local runs. Every run's meta says which node trained it (``ray_node_id``,
``ray_node_ip``, ``hostname``) and which attempt it was (``ray_attempt``).

A node lost mid-stack (its worker or the whole node died): the runs the driver had opened for that stack are sealed
as ``failed`` with the reason, then the stack is sent again (``retries`` times at most, default 2) to the nodes that
remain; past that the runs stay failed, and a rerun of the study trains them (failed runs are never cached).

Connecting (``connect``): the address's port is probed first (5 s), then ``ray.init`` joins the cluster (at most
20 s) with the ``engine`` package travelling with the job (``py_modules``), so nodes need only torch and the data
dependencies installed. A cluster that cannot be reached, does not answer, or runs another Ray or Python version
raises ``ClusterError``: one line naming the address and what to check. If Ray is already initialised (a notebook,
a test), that session is used.

At most one task per cluster CPU is in flight (longest first, as the local executor), so Ctrl-C knows which stacks
were running: those are cancelled in Ray and their open runs recorded as ``cancelled``.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from engine.config import RunConfig
from engine.faults import PAUSE_DIR_ENV, PAUSE_ENV, pause_point

if TYPE_CHECKING:  # engine.train imports torch: the CLI imports this module for its address setting
    from engine.train import StackWork

RAY_ADDRESS_ENV = "ABLATION_LAB_RAY_ADDRESS"  # the cluster `study run --executor ray` and the Launch page use
DEFAULT_RETRIES = 2
PROBE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 20.0  # with the probe, one line within 30 s whatever listens at the address
# ray.init retries the GCS once a second this many times; Ray's default (20) plus the probe would exceed 30 s.
GCS_CONNECT_RETRIES = "10"
TOKEN_FILE = Path.home() / ".ray" / "auth_token"


class ClusterError(Exception):
    """The Ray cluster cannot be used (unreachable, another Ray or Python version, no GPU for a CUDA study); the
    message names the address and what to check."""


# --- on the node -----------------------------------------------------------------------------------------------------

class _RelaySink:
    """A run's sink inside a Ray task: every call becomes an event for the driver."""

    def __init__(self, index: int, events) -> None:
        self.index, self.events = index, events

    def start(self, config: RunConfig, meta: dict[str, Any]) -> None:
        self.events.put(("start", self.index, dict(meta)))

    def log_epoch(self, epoch: int, metrics: dict[str, float | None]) -> None:
        self.events.put(("epoch", self.index, epoch, dict(metrics)))

    def finish(self, status: str, summary: dict[str, Any] | None = None, checkpoint: bytes | None = None,
               error: str | None = None) -> None:
        self.events.put(("finish", self.index, status, dict(summary or {}), checkpoint, error))


def _node_identity() -> dict[str, str]:
    import platform

    import ray
    return {"ray_node_id": ray.get_runtime_context().get_node_id(), "ray_node_ip": ray.util.get_node_ip_address(),
            "hostname": platform.node()}


def _train_stack_task(config_dicts: list[dict], device: str) -> Iterator[tuple]:
    """Runs on a Ray worker: train one stack in a thread, yielding its sinks' events as they happen; first
    ``("node", identity)``, last ``("end", error)``."""
    import queue
    import threading

    import torch

    from engine.tasks import load_task_data
    from engine.tasks.common import DataNotAvailableError
    from engine.train import train_stack
    torch.set_num_threads(1)
    configs = [RunConfig.from_dict(d) for d in config_dicts]
    node = _node_identity()
    yield ("node", node)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    end = object()
    outcome: dict[str, str | None] = {"error": None}

    def train() -> None:
        sinks = [_RelaySink(i, events) for i in range(len(configs))]
        try:
            data = load_task_data(configs[0])  # the data this node has, checked before any run starts
        except DataNotAvailableError as exc:  # say where: the driver's machine may well have the data
            message = f"on Ray node {node['hostname']} ({node['ray_node_ip']}): {exc}"
            for config, sink in zip(configs, sinks):
                sink.start(config, {"device": device, "stack_size": len(configs)})
                sink.finish("failed", error=message)
            events.put(end)
            return
        try:
            train_stack(configs, sinks, device=device, progress=lambda event: events.put(("progress", event)),
                        should_stop=stop.is_set, data=data)
        except Exception as exc:  # train_stack finished the open runs as failed with this message
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            events.put(end)

    trainer = threading.Thread(target=train, name="train-stack", daemon=True)
    trainer.start()
    sent_epoch = False
    try:
        while (event := events.get()) is not end:
            yield event
            if event[0] == "progress" and not sent_epoch:  # after every run's epoch of the stack's first epoch
                sent_epoch = True
                pause_point("ray-epoch-sent", [c.run_id for c in configs])
        yield ("end", outcome["error"])
    finally:  # cancelled (ray.cancel raises KeyboardInterrupt here) or done: the trainer stops after its epoch
        stop.set()


# --- connecting --------------------------------------------------------------------------------------------------------

def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not isinstance(address, str) or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"Ray address {address!r}: expected HOST:PORT, the address `ray start --head` "
                                     f"printed (e.g. 127.0.0.1:6379), or ray://HOST:PORT for Ray Client")
    return host.strip("[]"), int(port)


def check_address(address: str) -> str:
    """``address`` when it has the shape of a cluster address; ClusterError saying the shape otherwise."""
    _split_address(address)
    return address


def _what_to_check(address: str) -> str:
    from importlib.metadata import version
    return (f"check that `ray start --head --port {_split_address(address)[1]}` runs there and that this machine "
            f"reaches it; every node must run Ray {version('ray')} and Python {sys.version.split()[0]} as this one "
            f"does, and share its auth token (RAY_AUTH_TOKEN or ~/.ray/auth_token) when the cluster uses one")


def _use_token_if_available() -> None:
    """``ray start --head`` turns on token authentication when a token exists on its machine, but ``ray.init`` with
    an explicit address does not: then every call fails as 'missing token'. Follow the head's rule here."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if os.environ.get("RAY_AUTH_TOKEN") or (Path(path).is_file() if path else TOKEN_FILE.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def _forwarded_env() -> dict[str, str]:
    """What the tasks must see of this process's environment: the test pause points (engine/faults.py)."""
    return {k: os.environ[k] for k in (PAUSE_ENV, PAUSE_DIR_ENV) if os.environ.get(k)}


def _reason(exc: BaseException) -> str:
    """The first line of the innermost cause: Ray wraps 'missing token' or 'version mismatch' in a bare
    'Failed to connect'."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return _first_line(exc)[:300]


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` (HOST:PORT or ray://HOST:PORT), or start a local Ray without one."""
    import logging
    if address and not address.startswith("ray://"):
        host, port = _split_address(address)
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
        except OSError as exc:
            raise ClusterError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}): "
                                         f"{_what_to_check(address)}") from None
        _use_token_if_available()  # before Ray is imported: it reads its settings then
    os.environ.setdefault("RAY_NUM_REDIS_GET_RETRIES", GCS_CONNECT_RETRIES)
    import ray
    if ray.is_initialized():
        return
    engine_dir = str(Path(__file__).resolve().parents[1])
    runtime_env: dict[str, Any] = {"py_modules": [engine_dir], "excludes": ["__pycache__", "*.pyc"]}
    if _forwarded_env():
        runtime_env["env_vars"] = _forwarded_env()
    options = dict(address=address or None, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env,
                   logging_level=logging.WARNING)
    if not address:
        ray.init(**options)
        return
    # Something that accepts the connection but never answers as Ray does keeps ray.init retrying for minutes:
    # it runs in a thread, and the wait for it is bounded (the thread dies with the process).
    result: dict[str, BaseException | None] = {}

    def join() -> None:
        try:
            ray.init(**options)
            result["error"] = None
        except BaseException as exc:  # noqa: BLE001  (handed to the caller's thread)
            result["error"] = exc

    # Ray's driver keeps its default SIGTERM handling off the main thread, and says so; ours stays in place.
    logging.getLogger("ray._private.worker").addFilter(
        lambda record: not record.getMessage().startswith("SIGTERM handler is not set"))
    joining = threading.Thread(target=join, name="ray-connect", daemon=True)
    joining.start()
    joining.join(CONNECT_TIMEOUT_S)
    if "error" not in result:
        raise ClusterError(f"the Ray cluster at {address} did not answer within {CONNECT_TIMEOUT_S:g} s: "
                           f"{_what_to_check(address)}")
    if result["error"] is not None:  # version mismatch, auth, a GCS that refuses: Ray says it in many shapes
        raise ClusterError(f"cannot use the Ray cluster at {address} ({_reason(result['error'])}): "
                           f"{_what_to_check(address)}")


def trained_on(meta: dict[str, Any]) -> str:
    """Where a run trained, from its meta: the Ray node (id, address, host, attempt), else the machine."""
    host = meta.get("hostname") or "an unrecorded host"
    if meta.get("ray_node_id"):
        attempt = f", attempt {meta['ray_attempt']}" if meta.get("ray_attempt", 1) != 1 else ""
        return f"Ray node {meta['ray_node_id'][:12]} at {meta.get('ray_node_ip', '?')} (host {host}{attempt})"
    return f"{host}" + (f" ({meta['device']})" if meta.get("device") else "")


# --- on the driver -----------------------------------------------------------------------------------------------------

def _lost_with_node(exc: BaseException) -> bool:
    """The task died with its worker or node (worth sending again), not of an error in its own code."""
    import ray.exceptions as rex
    kinds = tuple(getattr(rex, name) for name in ("NodeDiedError", "WorkerCrashedError", "ActorDiedError",
                                                  "LocalRayletDiedError", "ObjectLostError", "OwnerDiedError",
                                                  "RaySystemError") if hasattr(rex, name))
    return isinstance(exc, kinds)


def _first_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class _Attempt:
    """One stack sent to Ray once: the sinks the driver writes its runs through, and where it ran."""
    index: int
    stack: list[RunConfig]
    number: int
    sinks: list[Any]
    node: dict[str, str] = field(default_factory=dict)
    error: str | None = None


class RayExecutor:
    """Stacks as Ray tasks, at most ``workers`` (default: the cluster's CPUs) in flight at once; a stack lost with
    its node is sent again at most ``retries`` times."""

    def __init__(self, address: str | None = None, workers: int | None = None,
                 retries: int = DEFAULT_RETRIES) -> None:
        self.address, self.workers, self.retries = address, workers, retries
        self.parallelism = 0

    def connect(self) -> None:
        connect(self.address)

    def run(self, stacks: list[list[RunConfig]], work: StackWork) -> None:
        """Train the stacks on Ray, writing their events as they stream in; KeyboardInterrupt after Ctrl-C."""
        import ray

        self.connect()
        device = str(work.device)
        resources = ray.cluster_resources()
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
        slots = int(resources.get("CPU", 1)) or 1
        if device.startswith("cuda"):  # one GPU per task: Ray places it only on a node with a free GPU
            options["num_gpus"] = 1
            slots = int(resources.get("GPU", 0))
            if not slots:
                raise ClusterError(
                    f"the Ray cluster{f' at {self.address}' if self.address else ''} has no GPU, and --device "
                    f"{device} asks one per task: start its GPU nodes with `ray start ... --num-gpus N`, or train "
                    f"with --device cpu")
        self.parallelism = limit = self.workers or slots
        remote = ray.remote(**options)(_train_stack_task)
        pending = [(i, 1) for i in range(len(stacks))]
        in_flight: dict[Any, _Attempt] = {}

        def send(index: int, number: int) -> None:
            sinks = [work.sink_factory(work.store, work.extra_meta) for _ in stacks[index]]
            generator = remote.remote([c.to_dict() for c in stacks[index]], device)
            in_flight[generator] = _Attempt(index, stacks[index], number, sinks)

        try:
            while pending or in_flight:
                while pending and len(in_flight) < limit:
                    send(*pending.pop(0))
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
                for generator in ready:
                    attempt = in_flight[generator]
                    try:
                        event = ray.get(next(generator))
                    except StopIteration:
                        del in_flight[generator]
                        work.done(attempt.index, self._close(attempt, attempt.error))
                    except ray.exceptions.RayError as exc:
                        del in_flight[generator]
                        lost = _lost_with_node(exc)
                        where = f" on node {attempt.node.get('ray_node_ip', '?')}" if attempt.node else ""
                        reason = (f"ray {'node lost' if lost else 'task failed'}{where} "
                                  f"(attempt {attempt.number}): {_first_line(exc)}")
                        outcomes = self._close(attempt, reason)
                        if lost and attempt.number <= self.retries:
                            pending.insert(0, (attempt.index, attempt.number + 1))
                        else:
                            work.done(attempt.index, outcomes)
                    else:
                        self._apply(attempt, event, work)
        except KeyboardInterrupt:
            for generator, attempt in in_flight.items():
                with suppress(Exception):  # a task already gone cannot be cancelled; its runs are recorded anyway
                    ray.cancel(generator, force=False)
                work.stopped(attempt.index, self._close(attempt, "cancelled by the user", status="cancelled"))
            raise

    @staticmethod
    def _apply(attempt: _Attempt, event: tuple, work: StackWork) -> None:
        """Write one streamed event through the driver's sinks."""
        kind = event[0]
        if kind == "node":
            attempt.node = event[1]
        elif kind == "start":
            meta = {**event[2], **attempt.node, "executor": "ray", "ray_attempt": attempt.number}
            attempt.sinks[event[1]].start(attempt.stack[event[1]], meta)
        elif kind == "epoch":
            attempt.sinks[event[1]].log_epoch(event[2], event[3])
        elif kind == "finish":
            _, i, status, summary, checkpoint, error = event
            attempt.sinks[i].finish(status, summary, checkpoint, error)
        elif kind == "progress":
            work.progress(attempt.index, event[1])
        elif kind == "end":
            attempt.error = event[1]

    @staticmethod
    def _close(attempt: _Attempt, error: str | None, status: str = "failed"):
        """Seal the attempt's runs that are still open (lost, cancelled) and say how each run ended."""
        from engine.train.driver import stack_outcomes
        for sink in attempt.sinks:
            if sink.run_id and sink.status == "running":
                sink.finish(status, error=error or "the Ray task ended without finishing this run")
        return stack_outcomes(attempt.stack, attempt.sinks, error=error if status == "failed" else None)
