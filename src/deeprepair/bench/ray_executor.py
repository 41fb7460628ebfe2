"""Run benchmark cells as Ray tasks (``--executor ray``): one task per cell, a GPU per task when
the cluster has GPUs. Workers rebuild the shared context from OUT (a shared filesystem).

This module knows nothing of how a cell runs: the runner passes ``task``, a module-level
function ``task(cell, prof, data_dir, out) -> (arch, corruption, method, seed)`` that Ray ships
to the workers by reference (so ``bench.runner`` imports this module, never the reverse)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import DeepRepairError


def run_ray(cells, task: Callable, prof: dict, data_dir: str, out: Path, address: str | None,
            log: Callable[[str], None], progress: Callable[[int], None] | None) -> None:
    try:
        import ray
    except ImportError:
        raise DeepRepairError("--executor ray needs Ray: pip install 'deeprepair[ray]'") from None
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    remote = ray.remote(num_gpus=gpus)(task)
    pending = [remote.remote(list(c), prof, data_dir, str(out)) for c in cells]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            log("/".join(map(str, ray.get(ref))) + ": done (ray)")
            if progress:
                progress(1)
