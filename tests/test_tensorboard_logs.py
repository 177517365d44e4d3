"""TensorBoard for committed runs (`cifar.analysis.tensorboard_logs`): curves from history.csv, HParams."""

from __future__ import annotations

import numpy as np
import pytest

from cifar.analysis.tensorboard_logs import write_logs
from cifar.store.runs import load_run
from tests.factory import write_run


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of the scalar summaries in `folder`, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    found = {}
    for tag in events.Tags()["tensors"]:
        values = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
        if all(value.ndim == 0 for _, value in values):  # (the HParams plugin's own are not scalars)
            found[tag] = [(step, float(value)) for step, value in values]
    return found


def test_a_fresh_clone_s_run_gets_its_curves_and_hparams(artifacts):
    labels = np.arange(50) % 10
    write_run(artifacts, "r", "baseline", labels, 0.6, epochs=4, val_labels=np.arange(30) % 10, augment=True)
    run = load_run("r")
    assert write_logs(run) == ["curves from history.csv", "hparams"]
    history = run.history
    train = scalars(run.path / "tensorboard" / "train")
    assert [step for step, _ in train["epoch_accuracy"]] == list(history.index)
    assert [v for _, v in train["epoch_accuracy"]] == pytest.approx(history["accuracy"].tolist())
    validation = scalars(run.path / "tensorboard" / "validation")
    assert [v for _, v in validation["epoch_loss"]] == pytest.approx(history["val_loss"].tolist())

    session = scalars(run.path / "tensorboard" / "hparams")
    assert session["test_accuracy"] == [(0, pytest.approx(run.metrics["test_accuracy"]))]
    assert session["test_ece"] == [(0, pytest.approx(run.calibration["test"]["ece_after"]))]
    hparams = _hparams(run.path / "tensorboard" / "hparams")
    assert hparams["augment"] is True and hparams["epochs"] == 4 and hparams["model"] == "baseline"
    assert hparams["learning_rate"] == pytest.approx(run.hyperparameters["learning_rate"])

    # Curves are written once (a run trained here has the callback's own); HParams each time.
    assert write_logs(run) == ["hparams"]
    assert len(list((run.path / "tensorboard" / "hparams").iterdir())) == 1


def _hparams(folder) -> dict:
    """The HParams plugin's session-start hyperparameters in `folder`'s events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    info = metadata.parse_session_start_info_plugin_data(content)
    values = {}
    for name, value in info.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind)
    return values
