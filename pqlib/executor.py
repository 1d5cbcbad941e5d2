"""Where independent work runs: this process's threads, or the tasks of a Dask cluster.

``with executor("dask", workers=4) as ex:`` starts a ``LocalCluster`` of 4 single-threaded
worker processes (``scheduler="tcp://HOST:8786"`` joins a running cluster instead: ``dask
scheduler`` on one machine, ``dask worker tcp://HOST:8786`` on each of the others);
``executor("local", workers=2)`` is a thread pool. :func:`submit` and :func:`completed` work
on both. A Dask task whose worker dies is run again on another worker (the scheduler's
``distributed.scheduler.allowed-failures``), and one that raises is retried ``RETRIES``
times, so work must be idempotent: sweep runs and class tasks write atomically and resume.
Dask is an optional dependency: ``pip install 'pqlib[dask]'``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager

from .checks import InvalidParameter

__all__ = ["EXECUTORS", "executor", "submit", "completed", "is_dask"]

EXECUTORS = ("local", "dask")
#: times a Dask task that raised is run again before its error is reported
RETRIES = 1


def is_dask(pool) -> bool:
    """Whether ``pool`` is a ``dask.distributed.Client``."""
    return type(pool).__module__.startswith("distributed")


@contextmanager
def executor(kind: str = "local", *, workers: int = 1, scheduler: str | None = None) -> Iterator:
    """A pool with ``submit(fn, *args, **kwargs) -> future``, shut down on exit.

    ``kind="local"``: ``workers`` threads. ``kind="dask"``: a ``distributed.Client`` of the
    cluster at ``scheduler``, or of a new ``LocalCluster`` of ``workers`` processes with one
    thread each.
    """
    if kind not in EXECUTORS:
        raise InvalidParameter(f"executor {kind!r} is not one of {EXECUTORS}")
    if kind == "local":
        if scheduler:
            raise InvalidParameter(f"scheduler={scheduler!r} needs the dask executor "
                                   "(--executor dask)")
        pool = ThreadPoolExecutor(max(1, int(workers)))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InvalidParameter("executor='dask' needs dask.distributed, which is not installed: "
                               "pip install 'pqlib[dask]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as err:
            raise ConnectionError(
                f"cannot reach the Dask scheduler at {scheduler!r} ({err}); start one with "
                "`dask scheduler` and workers with `dask worker ADDRESS`, or leave the scheduler "
                "out to start a local cluster") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=max(1, int(workers)), threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        with Client(cluster) as client:
            yield client


def submit(pool, fn, *args, name: str = "task", **kwargs):
    """``pool.submit(fn, *args, **kwargs)``; on Dask as a task named after ``name`` (unique
    key, never merged with an equal call, retried :data:`RETRIES` times if it raises)."""
    if is_dask(pool):
        return pool.submit(fn, *args, key=f"{name}-{uuid.uuid4().hex[:8]}", pure=False,
                           retries=RETRIES, **kwargs)
    return pool.submit(fn, *args, **kwargs)


def completed(futures: list) -> Iterator:
    """The futures as they finish (Dask futures or ``concurrent.futures`` ones)."""
    if futures and is_dask(futures[0]):
        from distributed import as_completed as dask_completed

        return iter(dask_completed(futures))
    return as_completed(futures)
