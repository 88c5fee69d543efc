"""A folder's photos on Ray: long-lived workers (Ray actors), each loading the models once, running the work of
:mod:`backfire.runners` one photo at a time — the same three parts, the same :func:`backfire.jobs.protect_task`
as a run in this process, so the same seed gives the same files byte for byte (at the same torch thread count:
a worker takes as many threads as its CPUs, ``--cpus-per-worker``).

The driver (this process) sends each worker a photo, streams the results as they finish (``ray.wait``) and
shows photos done / total, the rate and the time left. A photo whose worker died (the process killed, its node
lost) is run again on a fresh worker, at most :data:`RETRIES` times, then reported as failed with the reason;
its files are never half written (:class:`backfire.io.FileSet`), so a rerun finds it missing and does it.

Every worker reads the inputs and writes the outputs itself: every node must reach both paths (a shared
folder); each worker checks at its start that it can write into the output folder.

The runtime backfire starts itself (no address) is its own: Ray's token authentication on, with a random token
that lives only in the environment of this process and its Ray processes (never written to ``~/.ray``), no
dashboard, usage statistics off. Ray cannot be bound to loopback alone (it listens on the machine's address):
the token is what keeps others out. docs/ray.md says how to secure a cluster of one's own.
"""

from __future__ import annotations

import importlib
import os
import re
import secrets
import socket
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from backfire import io, jobs
from backfire.errors import ModelError, first_line
from backfire.progress import Progress
from backfire.runners import Done, LocalRunner, Runner, Work

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["INSTALL", "LOCAL", "RETRIES", "RayRunner", "RaySettings", "WorkerLost", "check_address", "require_ray"]

RETRIES = 2
"""How many times a photo whose worker died is run again (on a fresh worker) before it is reported failed."""

LOCAL = "local"
"""``--ray`` without an address: a runtime on this machine that backfire starts and stops itself."""

INSTALL = "--ray needs the ray package: install it with pip install 'backfire[ray]'"

CRASH_ON = "BACKFIRE_RAY_CRASH_ON"
"""Fault injection for the tests: a worker whose environment names a photo (its file name) ends its own process
(``os._exit``) on that photo's first attempt: a real crash of a real worker, which the run must survive."""

_ADDRESS = re.compile(r"^(auto|local|ray://\S+|\[?[A-Za-z0-9.:-]+\]?:\d{1,5})$")


def check_address(text: str) -> str:
    """``--ray``'s address as the user gives it (``local``, ``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), or a
    ValueError saying why (one line)."""
    address = text.strip()
    if not _ADDRESS.match(address):
        raise ValueError(f"--ray {text!r}: give no address (a local runtime), auto, HOST:PORT or ray://HOST:PORT")
    return address


def require_ray() -> None:
    """Raise :class:`backfire.io.InputError` with the install command when the ``ray`` package is missing."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # read when ray is imported
    try:
        importlib.import_module("ray")
    except ImportError:
        raise io.InputError(INSTALL) from None


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide a run on Ray goes: ``address`` (:data:`LOCAL` or a cluster's), ``workers`` (None: as
    many as the cluster's free CPUs and GPUs hold), the CPUs and GPUs (a fraction is allowed) each worker
    takes."""

    address: str = LOCAL
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: int = 1


class WorkerLost(Exception):
    """A photo whose worker died on every attempt: the reason is the last death's."""


class _Worker:
    """A Ray actor (made remote at connection): the request's models, loaded once; then photos, one at a time."""

    def __init__(self, request: jobs.Request, threads: int):
        import torch

        torch.set_num_threads(threads)  # the float results depend on it: as a local run at that count
        self.request = request
        self.notes: list[str] = []
        self.inpainters = request.load_models(self.notes.append)

    def ready(self, out: str) -> tuple[str, list[str]]:
        """This worker's host and the notes of its models' loading, once it proved it can write into ``out`` (a
        probe file, written and removed)."""
        probe = Path(out) / f".backfire-probe-{uuid.uuid4().hex}"
        try:
            io.write_bytes_atomic(probe, b"")
            probe.unlink()
        except (OSError, io.InputError) as error:
            raise io.InputError(f"{out}: a Ray worker on {socket.gethostname()} cannot write there ({first_line(error)}); "
                                "every node must reach the output folder (docs/ray.md)") from None
        return socket.gethostname(), self.notes

    def run(self, remote: Any, task: Any, attempt: int) -> Done:
        image = getattr(task, "image", None)
        if attempt == 0 and image is not None and os.environ.get(CRASH_ON) == image.name:
            os._exit(1)
        work = remote.bind(self.inpainters)
        done = next(iter(LocalRunner(batch=1).run(work, [task])))  # the road of a local run, one photo
        return Done(done.task, None if done.result is None else remote.reduce(work, done.result), done.error)


class RayRunner(Runner, AbstractContextManager):
    """Photos on Ray workers (see the module). Use as a context manager: entering connects (or starts the local
    runtime), leaving ends the workers and disconnects; the workers start at the first :meth:`run` (their models
    loaded once for every run after it) and check that they can write into ``out``."""

    def __init__(self, request: jobs.Request, settings: RaySettings, out: Path, *, log: jobs.Log = lambda m: None,
                 progress: bool = True):
        self.request, self.settings, self.out, self.log, self.progress = request, settings, Path(out), log, progress
        self._ray: Any = None
        self._actor_class: Any = None
        self._workers: list[Any] = []
        self._saved_env: dict[str, str | None] = {}

    # ------------------------------------------------------------------------------------------ connection

    def __enter__(self) -> RayRunner:
        require_ray()
        local = self.settings.address == LOCAL
        if local:
            # the runtime's own token, in the environment its processes inherit; never in a file
            self._set_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_AUTH_TOKEN_PATH=None)
        import ray
        from ray._raylet import AuthenticationTokenLoader, Config

        if local:  # ray read its auth settings at import: read them again from the environment set above
            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()
        self._ray = ray
        try:
            ray.init(address=self.settings.address, include_dashboard=False if local else None, log_to_driver=False,
                     configure_logging=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as error:
            self._restore_env()
            raise io.InputError(f"--ray {self.settings.address}: cannot connect: {first_line(error)}") from None
        self._actor_class = ray.remote(_Worker)
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self._workers:
            self._ray.kill(worker)
        self._workers = []
        self._ray.shutdown()
        self._restore_env()

    def _set_env(self, **values: str | None) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _restore_env(self) -> None:
        self._set_env(**self._saved_env)
        self._saved_env = {}

    # ------------------------------------------------------------------------------------------ workers

    def _how_many(self, tasks: int) -> int:
        settings = self.settings
        if settings.workers is not None:
            return min(settings.workers, tasks)
        free = self._ray.available_resources()
        fits = int(free.get("CPU", 0) // settings.cpus_per_worker)
        if settings.gpus_per_worker > 0:
            fits = min(fits, int(free.get("GPU", 0) // settings.gpus_per_worker))
        if fits < 1:
            raise io.InputError(f"--ray {settings.address}: no room for a worker of {settings.cpus_per_worker} CPU(s)"
                                f" and {settings.gpus_per_worker:g} GPU(s) (free: {free.get('CPU', 0):g} CPUs, "
                                f"{free.get('GPU', 0):g} GPUs); lower --cpus-per-worker / --gpus-per-worker")
        return min(fits, tasks)

    def _start(self) -> Any:
        settings = self.settings
        return self._actor_class.options(num_cpus=settings.cpus_per_worker, num_gpus=settings.gpus_per_worker,
                                         max_restarts=0).remote(self.request, settings.cpus_per_worker)

    def _start_pool(self, tasks: int) -> None:
        count = self._how_many(tasks)
        self.log(f"backfire: starting {count} Ray worker(s) ({self.settings.cpus_per_worker} CPU, "
                 f"{self.settings.gpus_per_worker:g} GPU each) at {self.settings.address}; each loads the models")
        self._workers = [self._start() for _ in range(count)]
        ready = self._get([w.ready.remote(str(self.out)) for w in self._workers])
        for note in ready[0][1]:  # every worker loads the same models: their notes once
            self.log(note)
        self.log(f"backfire: Ray workers ready on {', '.join(sorted({host for host, _ in ready}))}")

    def _get(self, refs: list) -> list:
        """``ray.get``, with an error of backfire's own raised as itself (a folder not writable) rather than
        wrapped in Ray's, and a worker that could not load the models as one line (:class:`ModelError`)."""
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(refs)
        except exceptions.RayActorError as error:
            if error.actor_init_failed:  # its models did not load: no other worker will load them either
                raise ModelError(f"a Ray worker could not load the models: {_why(error)}") from None
            raise
        except exceptions.RayTaskError as error:
            cause = error.cause if isinstance(getattr(error, "cause", None), Exception) else error
            raise cause from None

    # ------------------------------------------------------------------------------------------ the run

    def run(self, work: Work[T, R], tasks: Iterable[T]) -> Iterator[Done[T, R]]:
        """Every task's :class:`Done` as it finishes on a worker; ``work`` must have ``remote()`` and
        ``received(task, sent)`` (:class:`backfire.runners.Remote`)."""
        ray = self._ray
        queue = list(tasks)
        if not queue:
            return
        if not self._workers:
            self._start_pool(len(queue))
        remote = work.remote()
        lost = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
        bar = Progress("photos on Ray", total=len(queue), unit="photo", enabled=self.progress)
        retries: dict[int, int] = {}  # by the task's place in the queue
        pending = list(range(len(queue)))[::-1]  # popped from the end: the folder's order
        running: dict[Any, tuple[int, Any]] = {}  # ref → (task's place, worker)
        done = 0

        def submit(worker: Any) -> None:
            if pending:
                place = pending.pop()
                running[worker.run.remote(remote, queue[place], retries.get(place, 0))] = (place, worker)

        for worker in self._workers:
            submit(worker)
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            place, worker = running.pop(ref)
            try:
                [result] = self._get([ref])
            except lost as error:
                worker = self._replace(worker)
                retries[place] = retries.get(place, 0) + 1
                if retries[place] > RETRIES:
                    result = Done(queue[place], error=WorkerLost(
                        f"its Ray worker died on each of {RETRIES + 1} attempts: {_why(error)}"))
                    retries[place] = RETRIES
                else:
                    self.log(f"backfire: the Ray worker running {_name(queue[place])} died; running it again "
                             f"(retry {retries[place]} of {RETRIES})")
                    pending.append(place)
                    submit(worker)
                    continue
            submit(worker)
            done += 1
            bar(done, len(queue))
            sent = result.result
            yield Done(result.task, None if sent is None else work.received(result.task, sent), result.error,
                       retries.get(place, 0))

    def _replace(self, dead: Any) -> Any:
        """A fresh worker in the place of one that died (it loads the models again)."""
        fresh = self._start()
        self._workers = [fresh if w is dead else w for w in self._workers]
        return fresh


def _why(error: Exception) -> str:
    """The line of a Ray error that says why (Ray's messages end with the cause: the worker's exit, the
    exception of its creation)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def _name(task: Any) -> str:
    image = getattr(task, "image", None)
    return image.name if image is not None else str(task)

