"""Shared tiny checkpoints and engines for the model tests (CPU, offline)."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported anywhere

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="session")
def tiny_7b(tmp_path_factory):
    """The default tiny checkpoint (7B token layout, trained to answer like LISA)."""
    from lisa_ros.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny7b"), layout="7b", seed=0)


@pytest.fixture(scope="session")
def tiny_13b(tmp_path_factory):
    """13B token layout ([SEG] first), untrained to keep the suite fast."""
    from lisa_ros.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny13b"), layout="13b", seed=1, train_steps=0)


@pytest.fixture(scope="session")
def tiny_mlp_width_120(tmp_path_factory):
    """A tiny checkpoint whose MLP width (gate_proj, up_proj outputs) is not a multiple of 32."""
    from lisa_ros.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("width120"), seed=2, train_steps=0, intermediate_size=120)


def _make_engine(path, **options):
    from lisa_ros.model.engine import LisaEngine

    engine = LisaEngine.from_options({"path": str(path), "device": "cpu", "precision": "fp32", **options})
    engine.load()
    return engine


@pytest.fixture(scope="session")
def make_engine():
    """Builds and loads a CPU fp32 engine: ``make_engine(path, **options)``."""
    return _make_engine


@pytest.fixture(scope="session")
def engine_7b(tiny_7b):
    engine = _make_engine(tiny_7b.lisa_dir)
    yield engine
    engine.unload()


@pytest.fixture()
def engine(engine_7b):
    """The shared 7B engine with no conversation state left by other tests."""
    engine_7b.reset()
    yield engine_7b
    engine_7b.reset()


@pytest.fixture(scope="session")
def frame():
    """A 4:3 RGB frame (non-square, so CLIP's crop and SAM's padding matter)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)


def pytest_configure(config):
    """Give the module name ``conftest`` back to test/conftest.py once this file is registered.

    Every test/**/conftest.py outside a package is imported as the module ``conftest``; without
    this, test/node's ``from conftest import make_image_msg`` got this file, and ``pytest test``
    (scripts/test.sh, CI) stopped at collection with ImportErrors.
    """
    import sys
    from pathlib import Path

    root = (Path(__file__).resolve().parents[1] / "conftest.py").resolve()
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__).resolve() == root:
            sys.modules["conftest"] = plugin
            break
