"""A finished run's model rebuilt from its config, with the weights saved in its folder.

No code comes from the folder: the config says what to build (`cifar.modeling.models`), the folder gives
the weights, and the asset cache the frozen InceptionV3 base (checked against the run's checksum).
"""

from __future__ import annotations

from cifar.store import run_folder
from cifar.store.runs import Run, RunError


def load_model(run: Run):
    """The run's model rebuilt from its config with its weights (no code from the folder), as
    (resize, network): a transfer model's resize (run outside XLA) and the rest; a baseline
    has no resize (None, model)."""
    from cifar.config import load_config
    from cifar.modeling.features import outside_xla
    from cifar.modeling.models import build_baseline, build_resize, build_transfer_network

    if run.config_problem:
        raise RunError(f"{run.run_id}: its model cannot be rebuilt by this version ({run.config_problem})")
    config = load_config(run.hyperparameters)
    if config.model == "baseline":
        return None, _with_weights(build_baseline(config), run, run_folder.WEIGHTS["baseline"])
    head = load_head(run)  # before the backbone: a bad weights file fails fast
    backbone = backbone_weights(run)
    return outside_xla(build_resize(config)), build_transfer_network(config, backbone.path, head=head)


def backbone_weights(run: Run):
    """The cached InceptionV3 weights a transfer run was trained on (checked against its record)."""
    from cifar.sources.assets import load_inception_weights

    backbone = load_inception_weights(run.backbone_source)
    expected = (run.config.get("assets") or {}).get("backbone_sha256")
    if expected and expected != backbone.sha256:
        raise RunError(f"{run.run_id} was trained on other backbone weights ({expected[:12]})")
    return backbone


def last_dense(model):
    """The model's last Dense layer: the one that makes its class scores."""
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]


def load_head(run: Run):
    """A transfer run's head (features -> probabilities) with its saved weights."""
    from cifar.config import load_config
    from cifar.modeling.models import build_head

    return _with_weights(build_head(load_config(run.hyperparameters)), run, run_folder.WEIGHTS["transfer"])


def _with_weights(model, run: Run, name: str):
    """`model` with the weights saved as `name` in the run folder, or a RunError naming the file."""
    path = run.path / name
    if not path.is_file():
        raise RunError(f"{run.run_id} has no {name}")
    try:
        model.load_weights(str(path))
    except Exception as error:  # noqa: BLE001 (h5py and Keras raise many types for a bad file)
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise RunError(
            f"{run.run_id}: cannot load {name} into the model its config describes ({reason})"
        ) from None
    return model
