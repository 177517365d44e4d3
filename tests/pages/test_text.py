"""The dashboard's wording (`dashboard.text`): next steps, the feature plan, durations, paths."""

from __future__ import annotations

from pathlib import Path

from cifar.store.runs import list_runs
from dashboard import text


def test_next_steps_follow_what_is_missing(runs):
    commands = [command for _, command in text.next_steps(list_runs(), False, False)]
    assert commands[0] == "python -m cifar fetch"
    assert not any("train" in command for command in commands)  # both models have runs
    commands = [command for _, command in text.next_steps([], True, True)]
    assert "python -m cifar fetch" not in commands
    assert "python -m cifar train baseline --run-id baseline-reference" in commands
    assert "python -m cifar train transfer --run-id transfer-reference" in commands


def test_feature_plan_sentence_and_durations():
    assert text.feature_plan([], 0).startswith("Features are cached")
    sentence = text.feature_plan([("train", False, 50000), ("test", True, 10000)], 2020)
    assert "50,000 train, 10,000 test flipped images" in sentence and "about 34 min" in sentence
    assert [text.format_duration(s) for s in (-1, 5, 89, 600, 7200)] == [
        "0 s",
        "5 s",
        "89 s",
        "10 min",
        "2.0 h",
    ]


def test_home_relative_hides_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert text.home_relative(tmp_path / ".keras" / "features") == "~/.keras/features"
    assert text.home_relative(Path("/srv/keras")) == "/srv/keras"


def test_a_run_s_cost_in_one_line():
    measured = {
        "parameters": 23_930_000, "flops_per_image": 11.46e9, "views": 2,
        "latency_ms": {"1": 312.4, "256": 40_100.0}, "total_seconds": 3300.0,
    }  # fmt: skip
    assert text.cost_line(measured) == (
        "23.9 M parameters · 22.92 GFLOPs per image (2 views) · 312 ms per photo · 55 min to train"
    )
    assert text.cost_line({**measured, "views": 1, "total_seconds": None}) == (
        "23.9 M parameters · 11.46 GFLOPs per image · 312 ms per photo · training time unknown "
        "(its features' extraction was not timed)"
    )
    assert text.cost_line({"parameters": 10}) is None  # not measured: training's count alone says little


def test_an_upload_s_caption_says_its_size_the_frame_used_and_what_the_centre_square_crops():
    import io

    from PIL import Image

    from cifar.sources.images import open_image
    from dashboard.text import image_caption

    panorama = io.BytesIO()
    Image.new("RGB", (4000, 300), (10, 20, 30)).save(panorama, "JPEG")
    caption = image_caption(open_image(panorama.getvalue()))
    assert caption == (
        "Your image: 4000 × 300; used at 1024 × 77; "
        "every model sees its centre square, 92% of its width cropped"
    )
    animated = io.BytesIO()
    frames = [Image.new("RGB", (48, 64), (40 * i, 0, 0)) for i in range(3)]
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:])
    caption = image_caption(open_image(animated.getvalue()))
    assert caption == (
        "Your image: 48 × 64; the first of its 3 frames; "
        "every model sees its centre square, 25% of its height cropped"
    )
    square = io.BytesIO()
    Image.new("RGB", (200, 200)).save(square, "PNG")
    assert image_caption(open_image(square.getvalue())) == "Your image: 200 × 200"
