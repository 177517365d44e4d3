"""The dashboard's server settings (`.streamlit/config.toml`): what a visitor on the network gets."""

from __future__ import annotations

import tomllib

from tests.factory import REPO


def test_the_server_listens_on_loopback_and_shows_visitors_no_tracebacks():
    """It has no authentication: binding to a network is the user's explicit choice (docs/serving.md)."""
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["client"]["showErrorDetails"] == "none"
    assert config["server"]["maxUploadSize"] <= 25  # MB, as cifar.sources.images.MAX_UPLOAD_BYTES refuses
