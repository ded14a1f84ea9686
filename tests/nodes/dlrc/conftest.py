"""DLRC fixtures: tiny codecs (untrained with update(), or trained a few steps), real image tiles.

torch and compressai load only in the fixtures, so the LSH, selector, arbiter and wire tests run
without the ml extra.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CHANNELS = 32


def require_ml() -> Any:
    """torch, after checking the ml extra is installed (skip naming what is missing)."""
    torch = pytest.importorskip("torch", reason="DLRC codecs need the ml extra (torch)")
    pytest.importorskip("compressai", reason="DLRC codecs need the ml extra (compressai==1.2.8)")
    torch.set_num_threads(1)  # shared CI cores; results must not depend on the thread count
    return torch


@pytest.fixture(scope="session")
def untrained() -> Callable[[str], Any]:
    """Codec by name, N=M=32, seeded weights, entropy CDFs updated (cached per name)."""
    torch = require_ml()
    from nodes.models.codecs import build_codec

    cache: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in cache:
            torch.manual_seed(0)
            model = build_codec(name, CHANNELS, CHANNELS)
            model.update(force=True)
            model.eval()
            cache[name] = model
        return cache[name]

    return get


@pytest.fixture(scope="session")
def hr_image(shared_data: Path) -> np.ndarray:
    """A real 512x512 RSVQA high-resolution tile (uint8 HxWx3)."""
    from nodes.models.codecs.images import load_rgb

    path = shared_data / "images" / "rsvqa-hr" / "3.png"
    if not path.is_file():
        pytest.skip(f"real image {path} not found")
    return load_rgb(path)


def to_tensor(im: np.ndarray) -> Any:
    """uint8 HxWx3 -> float (1, 3, H, W) in [0, 1]."""
    torch = require_ml()
    return torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).float().div(255.0)[None]


TRAINED = ("bmshj2018-hyperprior", 0.0483)


def train_tiny(images_dir: Path, cache: Path) -> Any:
    """Trains the tiny scale hyperprior (TRAINED) a few steps on the real training split into
    `cache` (what `make models-codecs` builds, in small); returns the loaded model."""
    require_ml()
    from nodes.models.codecs import store
    from nodes.models.codecs.train import TrainSettings, train

    settings = TrainSettings(arch=TRAINED[0], lmbda=TRAINED[1], steps=40, n=CHANNELS,
                             m=CHANNELS, batch=2, crop_px=128, lr=2e-3)
    model, prov = train(settings, images_dir)
    store.save(model, cache, settings.arch, settings.lmbda, prov)
    return store.load(cache, *TRAINED)[0]


@pytest.fixture(scope="session")
def trained_cache(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A codec cache holding the tiny trained scale hyperprior (TRAINED)."""
    cache = tmp_path_factory.mktemp("codecs")
    train_tiny(shared_data / "images", cache)
    return cache


@pytest.fixture(scope="session")
def trained_bmshj(trained_cache: Path) -> Any:
    """The tiny trained scale hyperprior, loaded back through the cache (so the cache path is
    what the tests use)."""
    from nodes.models.codecs import store

    loaded, _ = store.load(trained_cache, *TRAINED)
    return loaded
