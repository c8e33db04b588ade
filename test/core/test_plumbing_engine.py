"""The plumbing engine's own options and fault injection (its Engine contract: test_engine_contract.py)."""
import numpy as np
import pytest

from lisa_ros.core.engine import EngineError, create_engine


def test_plumbing_engine_options_and_faults():
    with pytest.raises(ValueError, match="'bogus'"):
        create_engine("plumbing", {"bogus": 1})
    with pytest.raises(ValueError, match="'delay_s' must be float"):
        create_engine("plumbing", {"delay_s": "slow"})
    engine = create_engine("plumbing", {"path": "ignored/lisa/key", "load_error": "no weights at /x"})
    with pytest.raises(EngineError, match="no weights"):
        engine.load()
    engine = create_engine("plumbing", {})
    engine.load()
    out = engine.segment(np.zeros((6, 4, 3), np.uint8), "a and b and c", frame_key=1)
    assert [m.sum() for m in out.masks] == [8, 8, 8] and out.masks[1][2:4].all()  # one band per part
