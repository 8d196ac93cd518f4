"""One function over every case of a dataset, in worker processes: what the fingerprint and the verify stage share.

A few cases run in this process (a pool costs more than it saves); more run as chunks in a process pool whose
workers each hold the dataset once (set by the pool's initializer) and use one SimpleITK thread (one process per
core already). At most two chunks per worker are in flight, which bounds memory on large cases. An optional
progress bar goes to stderr.
"""
from __future__ import annotations

import multiprocessing as mp
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

from autoloss.errors import AutolossError

_WORKER_DATASET = None


def start_method() -> str | None:
    """fork (no re-imports: fastest) unless this process runs threads (Ray, gRPC, a live display): forking those
    can deadlock a child on a lock held by another thread, so then a clean forkserver."""
    if not sys.platform.startswith("linux"):
        return None
    return "fork" if threading.active_count() == 1 else "forkserver"


def _init_worker(dataset) -> None:
    global _WORKER_DATASET
    _WORKER_DATASET = dataset
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _run_chunk(fn: Callable[[Any, Any], dict], items: list) -> list:
    return [fn(item, _WORKER_DATASET) for item in items]


def map_cases(dataset, items: Sequence, fn: Callable[[Any, Any], dict], *, workers: int, what: str,
              progress: bool = False, min_pool: int = 4, preload: Sequence[str] = ()) -> list:
    """``[fn(item, dataset) for item in items]``, in order; ``fn`` a module-level function (it travels to the
    workers by name). ``what`` names the stage in the progress bar and in the one-line error of a dying worker;
    ``preload``: modules a forkserver imports once for all workers."""
    if workers < 1:
        raise AutolossError(f"number of workers must be at least 1, got {workers}")
    workers = min(workers, max(1, len(items)))
    method = start_method()  # decided before a progress bar starts its own thread
    if not progress:
        return _map(dataset, list(items), fn, workers, what, min_pool, method, preload, lambda k: None)
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"{what} {getattr(dataset, 'name', '')}", total=len(items))
        return _map(dataset, list(items), fn, workers, what, min_pool, method, preload,
                    lambda k: bar.advance(task, k))


def _map(dataset, items: list, fn, workers: int, what: str, min_pool: int, method: str | None, preload,
         on_done: Callable[[int], None]) -> list:
    if workers <= 1 or len(items) < min_pool:
        out = []
        for item in items:
            out.append(fn(item, dataset))
            on_done(1)
        return out
    size = max(1, min(16, len(items) // (workers * 4)))  # chunks amortise the per-task cost on many small cases
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    ctx = mp.get_context(method) if method else None
    if method == "forkserver" and preload:
        ctx.set_forkserver_preload(list(preload))
    results: dict[int, list] = {}
    ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(dataset,))
    try:
        todo = iter(enumerate(chunks))
        pending = {}
        for i, chunk in todo:
            pending[ex.submit(_run_chunk, fn, chunk)] = i
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                results[i] = fut.result()
                on_done(len(results[i]))
                nxt = next(todo, None)
                if nxt is not None:
                    pending[ex.submit(_run_chunk, fn, nxt[1])] = nxt[0]
    except BrokenProcessPool:
        raise AutolossError(f"{getattr(dataset, 'root', dataset)}: a {what} worker died (out of memory, or a "
                            "script calling autoloss without an `if __name__ == '__main__':` guard); retry with -j 1"
                            ) from None
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    return [r for i in sorted(results) for r in results[i]]
