"""The one place tests find assets that cannot be committed (public checkpoints, text).

REFQ_ASSETS points at the assets folder; the default is `shared/assets` next to the checkout.
Without the assets a test skips with the reason; with REFQ_REQUIRE_ASSETS=1 (set by .ci/run) it fails.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"


def assets_dir() -> Path:
    return Path(os.environ.get("REFQ_ASSETS", DEFAULT_ASSETS))


def asset(relative: str) -> Path:
    """Path of an asset file; skips the test (or fails, with REFQ_REQUIRE_ASSETS=1) when it is absent."""
    path = assets_dir() / relative
    if not path.exists():
        message = f"asset {relative} not found under {assets_dir()} (set REFQ_ASSETS to the assets folder)"
        if os.environ.get("REFQ_REQUIRE_ASSETS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


