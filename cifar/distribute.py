"""Scale-out with `tf.distribute`, configured the standard way (no home-made scheduler).

- Several GPUs in one machine: `MirroredStrategy`, picked automatically.
- Several machines: set `TF_CONFIG` on each (see README, "Scaling out"); training uses
  `MultiWorkerMirroredStrategy`, and feature extraction splits the chunks of the shared cache by
  index (`chunk % workers == worker index`), so every worker fills its own part of one cache.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Worker:
    index: int
    count: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def cluster_spec() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None


def this_worker() -> Worker:
    """This process's place in the cluster described by TF_CONFIG (0 of 1 without one)."""
    spec = cluster_spec()
    workers = spec.get("cluster", {}).get("worker", [])
    task = spec.get("task", {})
    if len(workers) <= 1:
        return Worker(0, 1)
    index = int(task.get("index", 0))
    if task.get("type", "worker") != "worker" or not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG task {task} is not one of the {len(workers)} workers")
    return Worker(index, len(workers))


def make_strategy():
    """MultiWorkerMirrored with a TF_CONFIG cluster, Mirrored with several GPUs, else default."""
    import tensorflow as tf

    if this_worker().count > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
