"""Memory: one Predictor classifying many varied uploads keeps a flat RSS (the dashboard keeps
one per run for the whole process). `bench/soak.py` is the long version (1,000 predictions and
50 head retrains).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from cifar.config import CLASS_NAMES
from cifar.sources.images import ImageError
from tests.robustness.robust_helpers import rss_bytes, varied_uploads


@pytest.fixture(scope="module")
def predictor(trained_baseline):
    """A Predictor of the session's trained baseline (`trained_baseline`), kept for the module."""
    from cifar.inference.predict import Predictor
    from cifar.store.runs import load_run

    artifacts, run_id, _ = trained_baseline
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CIFAR_ARTIFACTS", str(artifacts))
        return Predictor(load_run(run_id))


@pytest.mark.slow
def test_rss_stays_flat_over_100_predictions(predictor):
    uploads = varied_uploads(130, seed=1)
    for source in uploads[:30]:  # warm-up: tracing, allocator pools, Pillow plugins
        predictor.predict(source)
    traces = predictor._forward.experimental_get_tracing_count()
    gc.collect()
    before = rss_bytes()
    for source in uploads[30:]:
        top = predictor.predict(source, top_k=3)
        assert [label in CLASS_NAMES for label, _ in top] == [True] * 3
        assert all(0.0 <= p <= 1.0 for _, p in top)
    gc.collect()
    after = rss_bytes()
    growth = (after - before) / before
    print(f"RSS {before / 2**20:.0f} MB -> {after / 2**20:.0f} MB ({growth:+.1%}) over 100 predictions")
    assert growth < 0.10, f"RSS grew {growth:.1%} over 100 predictions"
    assert predictor._forward.experimental_get_tracing_count() == traces, "inputs of a new shape retrace"


@pytest.mark.slow
def test_predictor_refuses_bad_uploads_with_image_error(predictor, tmp_path):
    for bad in (b"", b"not an image", np.zeros((3, 8, 8)), b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(ImageError):
            predictor.predict(bad)
    with pytest.raises(ImageError):
        predictor.predict_file(tmp_path / "missing.png")
    with pytest.raises(ImageError):
        predictor.predict_file(tmp_path)  # a folder
    assert len(predictor.predict(np.zeros((32, 32, 3), np.uint8), top_k=10)) == 10
