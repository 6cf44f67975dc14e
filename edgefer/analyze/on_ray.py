"""The same tasks on Ray actors: one pipeline per actor, loaded once (see :mod:`edgefer.analyze`
for why Ray tasks rather than Ray Data). Ray is imported only when a job runs on it.
"""

from __future__ import annotations

import logging
import re
import socket
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import EdgeferError
from .inputs import Task
from .settings import MAX_ATTEMPTS, Settings, usable_cores
from .workers import error_result, init_worker, one_line, run_task

_RAY_ADDRESS_RE = re.compile(r"^(auto|local|ray://.+|[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5})$")


class RayWorker:
    """A Ray actor's state: one pipeline, loaded on the first task, reused for the next ones."""

    def __init__(self, settings: Settings, out: str):
        init_worker(settings, None)
        self.settings, self.out = settings, out

    def run(self, task: Task) -> dict[str, Any]:
        return run_task(task, self.settings, self.out)


def is_ray_address(value: str) -> bool:
    return bool(_RAY_ADDRESS_RE.match(value))


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` / ``ray://HOST:PORT`` nobody answers on, before ``ray.init``:
    Ray itself retries an unreachable head for minutes (and ignores SIGTERM meanwhile)."""
    hostport = address.split("://", 1)[-1]
    if address in ("auto", "local") or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise EdgeferError(f"cannot reach Ray at {address}: {getattr(e, 'strerror', None) or e}") from None


def ray_results(tasks: Sequence[Task], settings: Settings, out: str, address: str | None, workers: int | None,
                on_frames: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Run tasks on Ray actors (one pipeline each), yielding each result as it finishes.

    ``address`` None or ``"local"``: an embedded local Ray with ``workers`` CPUs (started here and
    shut down at the end; a Ray already initialised in this process is used as it is). Otherwise
    an existing cluster (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``): one actor per CPU it has.
    Outputs are written by the actors, so ``out`` must be reachable from every node (a shared
    folder or an object store URI); so must the videos.
    """
    import ray
    from ray.exceptions import RayError

    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address in (None, "local"):
                ray.init(num_cpus=workers or usable_cores(), object_store_memory=256 * 1024**2, **kw)
            else:
                check_reachable(address)
                ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise EdgeferError(f"cannot start or reach Ray at {address or 'local'}: {one_line(e)}") from None
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(workers or cpus, len(tasks)))
        Actor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=MAX_ATTEMPTS - 1)(RayWorker)
        actors = [Actor.remote(settings, out) for _ in range(n)]
        todo = deque(tasks)
        inflight: dict[Any, tuple[Task, Any]] = {}
        for a in actors:
            if todo:
                t = todo.popleft()
                inflight[a.run.remote(t)] = (t, a)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                t, a = inflight.pop(ref)
                try:
                    res = ray.get(ref)
                except RayError as e:
                    res = error_result(t, f"the Ray worker died on this video: {one_line(e)}")
                if on_frames is not None and res.get("frames"):
                    on_frames(res["frames"])
                yield res
                if todo:
                    nt = todo.popleft()
                    inflight[a.run.remote(nt)] = (nt, a)
        for a in actors:
            ray.kill(a)
    finally:
        if started:
            ray.shutdown()
