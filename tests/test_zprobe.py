import numpy as np
from test_features import *  # noqa
def test_probe(images, backbone, extract_calls):
    import keras
    from cifar.models import build_head, build_transfer_model, build_feature_extractor
    cached = _extract(images, backbone)
    print("feat mean", cached.mean(), "std over images", cached.std(0).mean(), "abs", np.abs(cached).mean())
    ext = build_feature_extractor(CONFIG, backbone.path)
    direct = ext.predict(images, verbose=0)
    print("max diff xla vs eager", np.abs(direct - cached).max())
