"""Ensembles as runs: weights fitted on the validation split only, members checked, the folder
read like any run's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.special import softmax

from cifar import atomic
from cifar.inference.ensemble import ensemble_weights, fit_weights, make_ensemble, pooled
from cifar.store.runs import RunError, list_runs, load_run, run_path
from tests.factory import recording_predictor, write_run

TEST_LABELS = np.arange(300, dtype=np.uint8) % 10
VAL_LABELS = (np.arange(200, dtype=np.uint8) * 3) % 10


@pytest.fixture
def members(artifacts) -> list[str]:
    """Two runs with validation predictions: a good CNN and a weak transfer run."""
    write_run(artifacts, "cnn", "baseline", TEST_LABELS, 0.9, seed=1, val_labels=VAL_LABELS)
    write_run(artifacts, "weak", "transfer", TEST_LABELS, 0.4, seed=2, val_labels=VAL_LABELS)
    return ["cnn", "weak"]


def test_pooling_is_the_softmax_of_the_weighted_log_probabilities():
    rng = np.random.default_rng(0)
    a, b = softmax(rng.normal(size=(5, 10)), axis=1), softmax(rng.normal(size=(5, 10)), axis=1)
    expected = softmax(0.7 * np.log(a) + 1.3 * np.log(b), axis=1)
    np.testing.assert_allclose(pooled([a, b], [0.7, 1.3]), expected, rtol=1e-5)


def test_the_weights_favour_the_member_that_is_right_on_validation():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 2000)
    right = np.full((2000, 10), 0.02)
    right[np.arange(2000), labels] = 0.82
    noise = softmax(rng.normal(size=(2000, 10)), axis=1)
    weights = fit_weights([right, noise], labels)
    assert weights[0] > 0.5 and weights[1] < 0.1 * weights[0]


def test_an_ensemble_is_a_run_whose_weights_never_see_the_test_set(members):
    folder = make_ensemble("duo", members)
    run = load_run("duo")
    assert run.model == "ensemble" and "duo" in [r.run_id for r in list_runs()]
    names, weights = ensemble_weights(run)
    assert names == members and weights[0] > weights[1] >= 0
    parts = [load_run(member) for member in members]
    np.testing.assert_allclose(
        run.test_predictions, pooled([p.test_predictions for p in parts], weights), atol=1e-6
    )
    np.testing.assert_allclose(
        run.validation[0], pooled([p.validation[0] for p in parts], weights), atol=1e-6
    )
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["member_test_accuracy"]) == set(members)
    assert run.calibration["n_validation"] == len(VAL_LABELS)

    # Other test predictions and labels for the members: the same weights (only validation counts).
    order = np.random.default_rng(0).permutation(len(TEST_LABELS))
    for member in members:
        atomic.write_npy(run_path(member) / "test_predictions.npy", load_run(member).test_predictions[order])
    make_ensemble("duo-shuffled", members)
    assert ensemble_weights(load_run("duo-shuffled"))[1] == pytest.approx(weights)
    assert not np.allclose(load_run("duo-shuffled").test_predictions, run.test_predictions)


def test_the_ensemble_command_writes_the_run(members, capsys):
    from cifar import cli

    assert cli.main(["ensemble", "--run-id", "duo", *members]) == 0
    assert load_run("duo").model == "ensemble"
    assert cli.main(["ensemble", "--run-id", "duo", *members]) != 0  # no silent overwrite
    assert "duo" in capsys.readouterr().err


def _other_test_labels(artifacts):
    write_run(artifacts, "other", "baseline", np.roll(TEST_LABELS, 1), 0.8, seed=3, val_labels=VAL_LABELS)


def _other_validation(artifacts):
    write_run(artifacts, "other", "baseline", TEST_LABELS, 0.8, seed=3, val_labels=np.roll(VAL_LABELS, 1))


def _no_validation(artifacts):
    write_run(artifacts, "other", "baseline", TEST_LABELS, 0.8, seed=3)


def _other_classes(artifacts):
    folder = write_run(artifacts, "other", "baseline", TEST_LABELS, 0.8, seed=3, val_labels=VAL_LABELS)
    config = json.loads((folder / "config.json").read_text())
    config["class_names"] = config["class_names"][::-1]
    atomic.write_json(folder / "config.json", config)


def _an_ensemble(artifacts):
    make_ensemble("other", ["cnn", "weak"])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda artifacts: None, "no run 'missing'"),
        (_other_test_labels, "other test labels"),
        (_other_validation, "another split"),
        (_no_validation, "python -m cifar calibrate other"),
        (_other_classes, "another class list"),
        (_an_ensemble, "is an ensemble itself"),
    ],
    ids=[
        "missing",
        "other test labels",
        "other validation split",
        "no validation",
        "other classes",
        "nested",
    ],
)
def test_a_member_that_cannot_join_is_named(members, artifacts, make, message):
    make(artifacts)
    other = "missing" if message.startswith("no run") else "other"
    with pytest.raises(RunError, match=message):
        make_ensemble("bad", ["cnn", other])
    assert not run_path("bad").exists()


@pytest.mark.parametrize("ids", [["cnn"], ["cnn", "cnn"]], ids=["one", "twice"])
def test_an_ensemble_needs_two_different_runs(members, ids):
    with pytest.raises(RunError, match="2 to 8 different runs"):
        make_ensemble("bad", ids)


def test_an_ensemble_cannot_hold_itself_or_more_than_eight_runs(members, artifacts):
    with pytest.raises(RunError, match="cannot be a member of itself"):
        make_ensemble("cnn", members, overwrite=True)
    for i in range(7):
        write_run(artifacts, f"more-{i}", "baseline", TEST_LABELS, 0.5, seed=10 + i, val_labels=VAL_LABELS)
    with pytest.raises(RunError, match="2 to 8 different runs"):
        make_ensemble("nine", [*members, *(f"more-{i}" for i in range(7))])


def test_an_ensemble_predictor_pools_its_members_at_their_own_resolutions(members):
    from PIL import Image

    from cifar.calibration import temperature_scaled
    from cifar.inference.predict import EnsemblePredictor

    make_ensemble("duo", members)
    run = load_run("duo")
    (cnn, cnn_seen), (weak, weak_seen) = (
        recording_predictor(load_run("cnn")),
        recording_predictor(load_run("weak")),
    )
    ensemble = EnsemblePredictor(run, [cnn, weak])
    assert ensemble.resolutions == ("full", "cifar")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    raw = ensemble.distribution(photo, calibrated=False)
    assert ensemble.model_input(photo).shape == (75, 75, 3)  # the largest a member sees
    assert ensemble.model_input(photo, "cifar").shape == (32, 32, 3)
    assert cnn_seen[-1].shape == (1, 32, 32, 3) and weak_seen[-1].shape == (1, 75, 75, 3)
    _, weights = ensemble_weights(run)
    members_raw = [cnn.distribution(photo, "cifar", False), weak.distribution(photo, "full", False)]
    np.testing.assert_allclose(raw, pooled([p[None] for p in members_raw], weights)[0], rtol=1e-5)
    np.testing.assert_allclose(
        ensemble.distribution(photo), temperature_scaled(raw, run.temperature), rtol=1e-5
    )
    ensemble.distribution(photo, "cifar")
    assert weak_seen[-1].shape == (1, 32, 32, 3)

    # A member trained again since: its weight no longer fits it.
    metrics = load_run("cnn").metrics
    atomic.write_json(run_path("cnn") / "metrics.json", {**metrics, "finished": metrics["finished"] + 60})
    with pytest.raises(RunError, match="cnn was trained again after duo was made"):
        EnsemblePredictor(run, [recording_predictor(load_run("cnn"))[0], weak])


def test_the_resolutions_a_run_takes_are_known_before_its_model_loads(members):
    """What the CLI checks `--resolution` against: a transfer member gives an ensemble photos."""
    from cifar.inference.predict import run_resolutions

    make_ensemble("duo", members)
    assert run_resolutions(load_run("duo")) == ("full", "cifar")
    assert run_resolutions(load_run("cnn")) == ("cifar",)
    assert run_resolutions(load_run("weak")) == ("full", "cifar")


def test_an_ensemble_of_32_px_members_takes_32_px_images_only(artifacts):
    """No member sees full resolution: neither does the ensemble (a baseline pair, say); its
    model input is the 32 px image and its probabilities pool the members' on raw pixels."""
    from PIL import Image

    from cifar.inference.predict import EnsemblePredictor, run_resolutions

    write_run(artifacts, "cnn", "baseline", TEST_LABELS, 0.9, seed=1, val_labels=VAL_LABELS)
    write_run(artifacts, "cnn2", "baseline", TEST_LABELS, 0.7, seed=2, val_labels=VAL_LABELS)
    make_ensemble("pair", ["cnn", "cnn2"])
    run = load_run("pair")
    (first, _), (second, _) = (recording_predictor(load_run(m)) for m in ("cnn", "cnn2"))
    ensemble = EnsemblePredictor(run, [first, second])
    assert ensemble.resolutions == ("cifar",) == run_resolutions(run)  # the CLI's, before loading
    with pytest.raises(ValueError, match="takes 'cifar' images, not 'full'"):
        ensemble.distribution(Image.new("RGB", (64, 48)), "full")
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    assert ensemble.model_input(photo).shape == (32, 32, 3)
    pixels = ensemble.model_input(photo)[None]
    _, weights = ensemble_weights(run)
    expected = pooled([first.probabilities(pixels), second.probabilities(pixels)], weights)
    np.testing.assert_allclose(ensemble.probabilities(pixels), expected, rtol=1e-6)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_an_ensemble_predictor_loads_its_members_itself(artifacts):
    """As the Classify page and the CLI make it: from the ensemble run alone, each member's own
    network loaded, their answers pooled with the run's weights."""
    import keras

    from cifar.config import BaselineConfig
    from cifar.inference.predict import load_predictor
    from cifar.modeling.models import build_baseline

    networks = {}
    for seed, member in enumerate(("cnn", "cnn2")):
        folder = write_run(artifacts, member, "baseline", TEST_LABELS, 0.8, seed=seed, val_labels=VAL_LABELS)
        keras.utils.set_random_seed(seed)
        networks[member] = build_baseline(BaselineConfig(epochs=3))
        networks[member].save_weights(str(folder / "model.weights.h5"))
    make_ensemble("pair", ["cnn", "cnn2"])
    run = load_run("pair")
    ensemble = load_predictor(run)
    assert [member.run.run_id for member in ensemble.members] == ["cnn", "cnn2"]
    pixels = np.random.default_rng(4).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    answers = [networks[m].predict(pixels, verbose=0) for m in ("cnn", "cnn2")]
    assert np.abs(answers[0] - answers[1]).max() > 1e-4
    _, weights = ensemble_weights(run)
    np.testing.assert_allclose(ensemble.probabilities(pixels), pooled(answers, weights), rtol=1e-4)


def test_an_ensemble_needs_the_backbone_weights_of_its_transfer_members(members):
    """What the Classify page checks before loading a model (loading would download them)."""
    from cifar.inference.predict import missing_backbone
    from cifar.sources.assets import inception_weights_path

    make_ensemble("duo", members)
    source = load_run("weak").backbone_source
    assert missing_backbone(load_run("duo")) == missing_backbone(load_run("weak")) == [source]
    assert missing_backbone(load_run("cnn")) == []
    cached = inception_weights_path("google2015")  # what "auto" settles for
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"weights")
    assert missing_backbone(load_run("duo")) == []


def test_an_ensemble_json_with_a_weight_too_many_is_refused_by_name(members):
    make_ensemble("duo", members)
    run = load_run("duo")
    record = json.loads((run.path / "ensemble.json").read_text())
    atomic.write_json(run.path / "ensemble.json", {**record, "weights": [*record["weights"], 1.0]})
    with pytest.raises(RunError, match="ensemble.json.*one weight per member"):
        ensemble_weights(run)


def _names(run_id: str, members: list[str]) -> None:
    """Rewrite an ensemble's ensemble.json to name `members` (by hand, as a hostile folder does)."""
    path = run_path(run_id) / "ensemble.json"
    record = json.loads(path.read_text())
    atomic.write_json(path, {**record, "members": members, "member_finished": None})


NESTINGS = {  # ensemble.json rewrites: what each names; none is a set of trained runs
    "itself": {"duo": ["cnn", "duo"]},
    "a cycle": {"duo": ["cnn", "trio"], "trio": ["cnn", "duo"]},
    "another ensemble": {"duo": ["cnn", "trio"]},
}


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("nesting", NESTINGS)
def test_an_ensemble_naming_an_ensemble_is_refused_when_read(nesting, artifacts, tmp_path, capsys):
    """#30 defect 6: `predict` printed a traceback; `robustness` pooled the ensemble's own earlier
    result. Members are checked when ensemble.json is read, and named."""
    import keras

    from cifar import cli
    from cifar.analysis.robustness import evaluate_robustness, stratified_subset
    from cifar.config import BaselineConfig
    from cifar.modeling.models import build_baseline
    from tests.factory import write_robustness

    members = ["cnn", "cnn2"]  # members with weights: a member is loaded as the user's would be
    for seed, member in enumerate(members):
        folder = write_run(artifacts, member, "baseline", TEST_LABELS, 0.8, seed=seed, val_labels=VAL_LABELS)
        build_baseline(BaselineConfig(epochs=3)).save_weights(str(folder / "model.weights.h5"))
    keras.backend.clear_session()
    make_ensemble("duo", members)
    make_ensemble("trio", members)
    indices = stratified_subset(TEST_LABELS, 30)
    for run_id in ("cnn", "cnn2", "duo", "trio"):
        write_robustness(run_id, TEST_LABELS, indices, 0.5)
    for run_id, named in NESTINGS[nesting].items():
        _names(run_id, named)
    refused = "names the ensemble itself" if nesting == "itself" else "member trio is an ensemble"
    image = tmp_path / "cat.png"
    Image.new("RGB", (40, 30), (200, 90, 20)).save(image)
    assert cli.main(["predict", "duo", str(image)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and refused in err and "Traceback" not in err, err
    with pytest.raises(RunError, match=refused):
        evaluate_robustness("duo", overwrite=True)
    from cifar.inference.ensemble import member_runs
    from cifar.inference.predict import load_predictor, missing_backbone, run_resolutions
    from dashboard import cache

    run = load_run("duo")
    for read in (member_runs, run_resolutions, missing_backbone, load_predictor, cache.predictor):
        with pytest.raises(RunError, match=refused):
            read(run)
