"""What a run costs beside its accuracy: size, compute per image, latency, total training time.

`run_cost(run)` measures a finished run and returns the fields `metrics.json` keeps:

    parameters, trainable_parameters   of the whole model as it predicts (transfer: base + head)
    flops_per_image                    floating-point operations of one 32 x 32 image, one view,
                                       counted from the model's graph by TensorFlow's profiler
                                       (a multiply-add is 2). The profiler has no count for resize
                                       ops: a transfer run's 32 px -> 299 px resize (some 10
                                       operations per output value, ~3 MFLOPs, 0.02 % of the base)
                                       is left out; its scaling to [-1, 1] is in.
    views                              the test-time views a prediction averages (`cifar.tta`)
    model_bytes                        the files a prediction needs (weights, + the backbone file)
    latency_ms                         {"1": ..., "256": ...}: one call of the Predictor on a batch,
                                       every view included, median of a few, on `latency_device`
    total_seconds                      training + the extraction of the features it trained on (from
                                       the feature cache's manifests); None, with `total_seconds_note`
                                       saying why, when the extraction time is not recorded

An ensemble's figures are its members' summed (its latency is measured). `python -m cifar cost RUN
...` adds them to finished runs; training adds them to every new run once it is published
(`CIFAR_MEASURE_COST=0` skips that; `parameters` then stays the count of what was trained, the
head alone for a transfer run).
"""

from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np

from cifar import tta
from cifar.config import IMAGE_SHAPE
from cifar.store import run_folder
from cifar.store.runs import Run, RunError, load_run

LATENCY_BATCHES = (1, 256)
LATENCY_REPEATS = 3
COST_FIELDS = (
    "parameters",
    "trainable_parameters",
    "flops_per_image",
    "views",
    "model_bytes",
    "latency_ms",
    "latency_device",
    "total_seconds",
    "total_seconds_note",
)


def count_flops(model, input_shape: tuple[int, ...], dtype: str = "float32") -> int:
    """Floating-point operations of one input through `model` (a Keras model or any callable of
    tensors), from its frozen graph by TensorFlow's profiler (tf.compat.v1.profiler)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph

    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec([1, *input_shape], dtype))
    _, graph_def = convert_variables_to_constants_v2_as_graph(concrete)
    profiler = tf.compat.v1.profiler
    options = profiler.ProfileOptionBuilder(profiler.ProfileOptionBuilder.float_operation())
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        profile = profiler.profile(
            graph=graph,
            run_meta=tf.compat.v1.RunMetadata(),
            cmd="op",
            options=options.with_empty_output().build(),
        )
    return int(profile.total_float_ops)


def parameter_counts(model) -> tuple[int, int]:
    """(all, trainable) parameters of a Keras model."""
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    return int(model.count_params()), trainable


def model_bytes(run: Run) -> int:
    """Bytes of the files a prediction needs: the run's weights, and a transfer run's backbone."""
    from cifar.sources.assets import inception_weights_path

    size = (run.path / run_folder.WEIGHTS[run.model]).stat().st_size
    if run.model == "transfer":
        size += inception_weights_path(run.backbone_source).stat().st_size
    return int(size)


def latency_ms(predictor, batches=LATENCY_BATCHES, repeats: int = LATENCY_REPEATS) -> dict[str, float]:
    """Median milliseconds of `predictor.probabilities` on random 32 x 32 batches (after a warm-up)."""
    pixels = np.random.default_rng(0).integers(0, 256, (max(batches), *IMAGE_SHAPE), dtype=np.uint8)
    result = {}
    for batch in batches:
        predictor.probabilities(pixels[:batch])  # warm-up: a new batch size compiles once
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            predictor.probabilities(pixels[:batch])
            times.append(time.perf_counter() - started)
        result[str(batch)] = round(1000 * statistics.median(times), 2)
    return result


def model_cost(predictor) -> dict:
    """parameters, trainable_parameters and flops_per_image of a run's loaded model (a Predictor)."""
    from cifar.config import load_config
    from cifar.modeling.models import build_resize

    network = predictor.network
    flops = count_flops(network, tuple(network.inputs[0].shape[1:]))
    if predictor.run.model == "transfer":  # the scaling to [-1, 1] (the resize: see the docstring)
        flops += count_flops(build_resize(load_config(predictor.run.hyperparameters)), IMAGE_SHAPE, "uint8")
    parameters, trainable = parameter_counts(network)
    return {"parameters": parameters, "trainable_parameters": trainable, "flops_per_image": flops}


def total_seconds(run: Run) -> tuple[float | None, str | None]:
    """(training + feature extraction seconds, None) or (None, why the extraction is unknown)."""
    seconds = float(run.metrics.get("seconds") or 0.0)
    if run.model != "transfer":
        return seconds, None
    from cifar.config import load_config
    from cifar.modeling.feature_cache import extraction_seconds
    from cifar.sources.assets import load_cifar10, load_inception_weights

    quiet = lambda message: None  # noqa: E731
    data, weights = load_cifar10(log=quiet), load_inception_weights(run.backbone_source, log=quiet)
    extracted = extraction_seconds(load_config(run.hyperparameters), data, weights)
    if extracted is None:
        return None, (
            f"training took {seconds:.0f} s; the extraction of the features it trained on is not recorded "
            "(extracted before extraction times were kept, or on another machine)"
        )
    return seconds + extracted, None


def run_cost(run: Run, predictor=None) -> dict:
    """Every cost field of a finished run (`predictor`: its loaded Predictor, if there is one)."""
    from cifar.inference.predict import load_predictor
    from cifar.modeling.distribute import describe_device

    if run.model == "ensemble":
        return _ensemble_cost(run, predictor)
    predictor = predictor or load_predictor(run)
    total, note = total_seconds(run)
    return {
        **model_cost(predictor),
        "views": len(
            tta.views(
                bool(run.hyperparameters.get("tta_flip")), bool(run.hyperparameters.get("tta_translate"))
            )
        ),
        "model_bytes": model_bytes(run),
        "latency_ms": latency_ms(predictor),
        "latency_device": describe_device(),
        "total_seconds": total,
        "total_seconds_note": note,
    }


def _ensemble_cost(run: Run, predictor=None) -> dict:
    from cifar.inference.ensemble import member_runs
    from cifar.inference.predict import load_predictor
    from cifar.modeling.distribute import describe_device

    members = member_runs(run)  # (the Predictor below takes the same members: `Run.ensemble`)
    missing = [member.run_id for member in members if "flops_per_image" not in member.metrics]
    if missing:
        raise RunError(f"measure the members first: python -m cifar cost {' '.join(missing)}")
    summed = {
        name: sum(member.metrics[name] for member in members)
        for name in ("parameters", "trainable_parameters", "model_bytes")
    }
    totals = [member.metrics.get("total_seconds") for member in members]
    return {
        **summed,
        # One "view" of an ensemble is every member's answer, their own views included.
        "flops_per_image": sum(
            member.metrics["flops_per_image"] * member.metrics["views"] for member in members
        ),
        "views": 1,
        "latency_ms": latency_ms(predictor or load_predictor(run)),
        "latency_device": describe_device(),
        "total_seconds": None if None in totals else sum(totals),
        "total_seconds_note": "the members' totals" if None not in totals else "a member's total is unknown",
    }


def check_replace_cost(run: Run, overwrite: bool) -> None:
    """FileExistsError saying what cost the run's metrics.json holds, unless `overwrite` (the
    rule of `atomic.check_replace`, for fields of a file)."""
    from cifar import atomic

    if "flops_per_image" in run.metrics:  # (the measured fields come together: `MetricsFile`)
        measured = f"measured on {run.metrics.get('latency_device', 'an unnamed device')}"
        atomic.check_overwrite(f"{run.run_id}'s cost in metrics.json ({measured})", overwrite)


def measure(run_id: str, overwrite: bool = False) -> dict:
    """Measure a finished run's cost and add it to its metrics.json (replacing a measured cost
    only with `overwrite`); returns the fields."""
    from cifar import atomic
    from cifar.store import run_files

    run = load_run(run_id)
    check_replace_cost(run, overwrite)
    cost = run_cost(run)
    path = run.path / run_folder.METRICS
    current = json.loads(run_files.read_bytes(path, run_files.MAX_JSON_BYTES))  # (its null fields kept)
    if current.get("finished") != run.metrics.get("finished"):  # made again while it was measured
        raise RunError(f"{run_id} was made again while its cost was measured: measure it again")
    atomic.write_json(path, {**current, **cost})
    return cost


def measure_if_enabled(run_id: str, say=print) -> None:
    """A newly published run's cost, unless CIFAR_MEASURE_COST=0; what happened is said, a
    failure too, not raised (the run is complete without it: `python -m cifar cost RUN` later)."""
    if os.environ.get("CIFAR_MEASURE_COST", "1") == "0":
        return
    try:
        say(f"cost of {run_id}: {measure(run_id)}")
    except Exception as error:  # noqa: BLE001
        say(f"could not measure the cost of {run_id} (python -m cifar cost {run_id} later): {error}")


def pareto_front(table, cost: str, accuracy: str = "test_accuracy"):
    """The rows of `table` (a `tables.runs_table`) that no other row beats on both: cheaper or as
    cheap, and more accurate or as accurate; by rising cost. Rows without the cost are left out."""
    rows = table.dropna(subset=[cost, accuracy]).sort_values([cost, accuracy], ascending=[True, False])
    best, keep = float("-inf"), []
    for index, value in rows[accuracy].items():
        if value > best:
            keep.append(index)
            best = value
    return rows.loc[keep]
