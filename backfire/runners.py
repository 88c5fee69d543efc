"""Where a folder's photos run: one interface, a runner takes tasks and yields their results as they finish.

The work on one photo has three parts, and a :class:`Work` says what each is (``backfire protect``'s is
:class:`ProtectWork`; ``backfire evaluate`` has its own): ``read`` the task's photo (an unreadable one is
that task's error, not the run's), ``protect`` a batch of photos (the costly part: the models live there),
``finish`` one photo from its protection (save, read back, judge, reports). A :class:`Runner` schedules them;
:class:`LocalRunner` runs them in this process, putting photos of the same size into one batch of
optimisations (:func:`backfire.protect.engine.protect_batch`) so that a GPU's passes stay full. A runner
that spreads photos over Ray actors (:class:`backfire.ray_runner.RayRunner`) is the same interface: it ships
the work's :class:`Remote` (its settings, no models, no callbacks) to workers that hold their own models, runs
the same three parts there one photo at a time, and yields :class:`Done` records as they come back.

    >>> runner = LocalRunner(batch=8)
    >>> for done in runner.run(ProtectWork(models, settings), plan.tasks):
    ...     print(done.task.image, done.error or done.result.outcome.summary)
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import torch

from backfire import io, jobs
from backfire.inpainters.base import Inpainter
from backfire.protect.engine import OutOfMemory, Photo, Protection, StepCallback, protect_batch

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["Done", "LocalRunner", "Prepared", "ProtectWork", "Remote", "Runner", "Work", "default_batch"]


@dataclass(frozen=True)
class Prepared(Generic[T]):
    """A task whose photo was read: what the engine optimises (``photo``) and what ``finish`` needs besides
    (``extra``: the loaded file, its region …)."""

    task: T
    photo: Photo
    extra: Any = None


@dataclass
class Done(Generic[T, R]):
    """One task's outcome: its result, or the error that stopped it (a photo that cannot be read or written;
    an error of the run itself, such as a model that does not fit, is raised instead)."""

    task: T
    result: R | None = None
    error: Exception | None = None
    retries: int = 0  # the times a runner ran the task again because the worker running it died


class Work(Protocol[T, R]):
    """What is done for each photo, in the three parts a runner schedules."""

    def read(self, task: T) -> Prepared[T]:
        """The task's photo; raises :class:`backfire.io.InputError` for one that cannot be used."""

    def protect(self, batch: Sequence[Prepared[T]]) -> list[Protection]:
        """The protections of a batch of photos (of one size), in its order."""

    def finish(self, prepared: Prepared[T], protection: Protection) -> R:
        """The task's result from its protection (files written, verdicts)."""


class Remote(Protocol[T]):
    """What of a :class:`Work` travels to a worker in another process (pickled: settings only, no models and no
    callbacks), for a runner that runs photos elsewhere. The work's own ``remote()`` makes it, its
    ``received(task, sent)`` turns what came back into the task's result on this side."""

    def bind(self, inpainters: Sequence[Inpainter]) -> Work[T, Any]:
        """The work, on the worker, with the worker's own models."""

    def reduce(self, work: Work[T, Any], result: Any) -> Any:
        """What travels back of ``work``'s result for a task (small: no pixels)."""


class Runner(abc.ABC):
    """Runs a :class:`Work` over tasks."""

    @abc.abstractmethod
    def run(self, work: Work[T, R], tasks: Iterable[T]) -> Iterator[Done[T, R]]:
        """Every task's :class:`Done`, as each finishes (not necessarily in the tasks' order)."""


AUTO_BATCH_LIMIT = 16
"""The most photos ``--batch auto`` puts into one batch on a GPU."""


def default_batch(device: torch.device) -> int | None:
    """The batch size ``--batch auto`` starts from: 1 on the CPU (a batch of photos costs there what the photos
    cost one by one: docs/benchmarks.md), None on a GPU (sized from its free memory after the first photo)."""
    return 1 if device.type == "cpu" else None


class LocalRunner(Runner):
    """Photos in this process, those of one size in batches of up to ``batch`` optimisations.

    ``batch=None`` sizes the batches from the device: one photo at a time on the CPU; on a GPU the first photo
    of a size runs alone and its peak memory sets how many of that size fit (at most
    :data:`AUTO_BATCH_LIMIT`, leaving a fifth of the free memory). A batch that runs out of memory is split in
    two and retried; one photo that does not fit is the run's error (:class:`~backfire.protect.engine.OutOfMemory`,
    one line naming what would fit). ``lookahead``: how many read photos may wait for their batch to fill (the
    largest waiting batch runs when more would wait).
    """

    def __init__(self, batch: int | None = None, lookahead: int | None = None):
        if batch is not None and batch < 1:
            raise ValueError(f"batch must be ≥ 1, got {batch}")
        self.batch = batch
        self.lookahead = lookahead
        self._fits: dict[tuple[int, int], int] = {}  # photos of a size that fit, measured (auto on a GPU)

    def run(self, work: Work[T, R], tasks: Iterable[T]) -> Iterator[Done[T, R]]:
        waiting: dict[tuple[int, int], list[Prepared[T]]] = {}
        for task in tasks:
            try:
                prepared = work.read(task)
            except io.InputError as error:
                yield Done(task, error=error)
                continue
            size = tuple(prepared.photo.image.shape[-2:])
            waiting.setdefault(size, []).append(prepared)
            if len(waiting[size]) >= self._limit(work, size):
                yield from self._run(work, waiting.pop(size))
            elif sum(len(w) for w in waiting.values()) > self._lookahead(work):
                yield from self._run(work, waiting.pop(max(waiting, key=lambda s: len(waiting[s]))))
        for size in list(waiting):
            yield from self._run(work, waiting.pop(size))

    def _device(self, work: Work) -> torch.device:
        return getattr(work, "device", torch.device("cpu"))

    def _limit(self, work: Work, size: tuple[int, int]) -> int:
        if self.batch is not None:
            return self.batch
        device = self._device(work)
        fixed = default_batch(device)
        return fixed if fixed is not None else self._fits.get(size, 1)

    def _lookahead(self, work: Work) -> int:
        if self.lookahead is not None:
            return self.lookahead
        return 2 * (self.batch or AUTO_BATCH_LIMIT)

    def _run(self, work: Work[T, R], batch: list[Prepared[T]]) -> Iterator[Done[T, R]]:
        device = self._device(work)
        measuring = self.batch is None and device.type == "cuda" and len(batch) == 1
        if measuring:
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        try:
            protections = work.protect(batch)
        except OutOfMemory:
            if len(batch) == 1:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(batch) // 2
            size = tuple(batch[0].photo.image.shape[-2:])
            self._fits[size] = max(1, half)
            yield from self._run(work, batch[:half])
            yield from self._run(work, batch[half:])
            return
        if measuring:
            size = tuple(batch[0].photo.image.shape[-2:])
            used = max(1, torch.cuda.max_memory_allocated(device) - before)
            free, _ = torch.cuda.mem_get_info(device)
            self._fits.setdefault(size, max(1, min(AUTO_BATCH_LIMIT, int(0.8 * free / used))))
        for prepared, protection in zip(batch, protections):
            try:
                yield Done(prepared.task, work.finish(prepared, protection))
            except io.InputError as error:
                yield Done(prepared.task, error=error)


class ProtectWork:
    """``backfire protect``'s work on a task (:class:`backfire.jobs.Task`): read it, protect a batch against
    ``inpainters`` as ``request`` asks, and finish each photo with :func:`backfire.jobs.protect_task` (the saved
    file, read back and judged; its ``.json`` and preview). ``on_step(tasks)`` gives the step callback of a
    batch, ``on_judge(task)`` the verdict's progress of a photo, ``on_rung(task)`` what hears of each rung of a
    ``--budget auto`` search (any may be None). A search protects in ``finish``, rung by rung (each rung's verdict
    decides whether the next runs), so its batches protect nothing ahead."""

    def __init__(self, inpainters: Sequence[Inpainter], request: jobs.Request, *,
                 log: jobs.Log = lambda message: None,
                 on_step: Callable[[Sequence[jobs.Task]], StepCallback | None] = lambda tasks: None,
                 on_judge: Callable[[jobs.Task], jobs.JudgeProgress | None] = lambda task: None,
                 on_rung: Callable[[jobs.Task], jobs.RungLog | None] = lambda task: None):
        self.inpainters, self.request, self.log = list(inpainters), request, log
        self.on_step, self.on_judge, self.on_rung = on_step, on_judge, on_rung

    @property
    def device(self) -> torch.device:
        return self.inpainters[0].device

    def read(self, task: jobs.Task) -> Prepared[jobs.Task]:
        loaded, region = jobs.load(task, self.request.max_pixels, self.log, keep_alpha=True, inpainters=self.inpainters)
        return Prepared(task, Photo(loaded.pixels, region, self.request.seed, loaded.grey), (loaded, region))

    def protect(self, batch: Sequence[Prepared[jobs.Task]]) -> list[Protection | None]:
        if self.request.auto is not None:
            return [None] * len(batch)  # searched in finish
        on_step = self.on_step([p.task for p in batch])
        if on_step is not None:
            on_step(0, self.request.recipe.steps, None)  # the wait for the first step shows too
        return protect_batch([p.photo for p in batch], self.inpainters, self.request.recipe, on_step=on_step)

    def finish(self, prepared: Prepared[jobs.Task], protection: Protection | None) -> jobs.Judged:
        on_step = None if protection is not None else self.on_step([prepared.task])
        return jobs.protect_task(prepared.task, self.inpainters, self.request, on_judge=self.on_judge(prepared.task),
                                 log=self.log, loaded=prepared.extra, protection=protection, on_step=on_step,
                                 on_rung=self.on_rung(prepared.task))

    def remote(self) -> _RemoteProtect:
        return _RemoteProtect(self.request)

    def received(self, task: jobs.Task, sent: jobs.Judged) -> jobs.Judged:
        return sent


@dataclass(frozen=True)
class _RemoteProtect:
    """:class:`ProtectWork` on a worker: the request travels, the worker's models protect, the outcome and the
    record come back (:meth:`backfire.jobs.Judged.light`)."""

    request: jobs.Request

    def bind(self, inpainters: Sequence[Inpainter]) -> ProtectWork:
        return ProtectWork(inpainters, self.request)

    def reduce(self, work: ProtectWork, result: jobs.Judged) -> jobs.Judged:
        return result.light()
