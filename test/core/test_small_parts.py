"""Instruction validation, parameter validation, mask helpers, statistics, the plumbing engine."""
import numpy as np
import pytest

from lisa_ros.core.config import PARAMETERS, ConfigError, NodeConfig
from lisa_ros.core.engine import EngineError, create_engine
from lisa_ros.core.instruction import InstructionError, validate_instruction
from lisa_ros.core.results import bounding_box, keep_best_masks, overlay, union_mono8
from lisa_ros.core.stats import RequestStats
from lisa_ros.core.types import EngineOutput, Status
from lisa_ros.core.worker import PairingPolicy


@pytest.mark.parametrize("text,message", [
    ("", "empty"), ("   \n\t", "empty"), ("x" * 11, "max_instruction_chars = 10"),
    ("cup \ufffd", "not valid UTF-8"), (b"\xff\xfe", "not valid UTF-8"), ("a\x00b", "NUL"),
])
def test_bad_instructions_are_refused_with_the_reason(text, message):
    with pytest.raises(InstructionError, match=message):
        validate_instruction(text, max_chars=10)


def test_good_instruction_is_stripped():
    assert validate_instruction("  a cup  ", 10) == "a cup"
    assert validate_instruction("tasse à café".encode(), 20) == "tasse à café"


def test_defaults_are_valid_and_model_options_are_forwarded():
    config = NodeConfig.from_parameters({"model.path": "/ckpt", "model.delay_s": None, "max_queue": 2})
    assert config.engine == "lisa" and config.model_options == {"path": "/ckpt"}
    assert config.pairing_policy is PairingPolicy.NEWEST and config.max_queue == 2
    assert set(PARAMETERS) <= {f.name for f in config.__dataclass_fields__.values()}


def test_every_bad_parameter_is_named_at_once():
    with pytest.raises(ConfigError) as error:
        NodeConfig.from_parameters({"engine": "yolo", "pairing_policy": "oldest", "max_queue": 0,
                                    "inference_timeout": "soon", "compressed": "yes", "overlay_alpha": 2.0})
    for name in ("engine", "pairing_policy", "max_queue", "inference_timeout", "compressed", "overlay_alpha"):
        assert name in str(error.value)


def test_engine_option_problems_are_named_with_the_node_parameter_problems():
    """Engine options used to be checked only once the node parameters passed, and only up to the first."""
    with pytest.raises(ConfigError) as error:
        NodeConfig.from_parameters({"engine": "plumbing", "max_queue": 0, "overlay_alpha": 2.0,
                                    "model.delay_s": "slow", "model.hang_s": "long"})
    assert len(error.value.problems) == 3
    for fragment in ("max_queue", "overlay_alpha", "'delay_s' must be float", "'hang_s' must be float"):
        assert fragment in str(error.value), fragment


def test_every_bad_lisa_option_is_named_with_the_node_parameter_problems():
    pytest.importorskip("torch")
    with pytest.raises(ConfigError) as error:
        NodeConfig.from_parameters({"engine": "lisa", "max_queue": 0, "model.precision": "fp8",
                                    "model.device": "gpu", "model.max_new_tokens": 0, "model.path": 5})
    for fragment in ("max_queue", "'precision' must be one of", "'device' must be", "'max_new_tokens' must be in",
                     "'path' must be str"):
        assert fragment in str(error.value), fragment


def test_union_boxes_and_overlay():
    a = np.zeros((4, 5), bool)
    a[1:3, 2:4] = True
    b = np.zeros((4, 5), bool)
    b[3, 0] = True
    union = union_mono8([a, b], 4, 5)
    assert union.dtype == np.uint8 and set(np.unique(union)) == {0, 255} and union.sum() == 5 * 255
    assert bounding_box(a) == (2, 1, 2, 2) and bounding_box(np.zeros((2, 2), bool)) == (0, 0, 0, 0)
    drawn = overlay(np.zeros((4, 5, 3), np.uint8), [a], alpha=1.0)
    assert drawn[1, 2].tolist() == [255, 64, 64] and drawn[0, 0].tolist() == [0, 0, 0]


def test_keep_best_masks_keeps_the_highest_scoring_in_their_order():
    masks = [np.full((2, 2), i % 2 == 0) for i in range(5)]
    output = EngineOutput(masks=masks, scores=[0.1, 0.9, 0.5, 0.9, 0.7], text="a [SEG] b")
    kept = keep_best_masks(output, 3)
    assert kept.scores == [0.9, 0.9, 0.7] and [m is masks[i] for m, i in zip(kept.masks, (1, 3, 4))] == [True] * 3
    assert kept.text == "a [SEG] b" and output.scores == [0.1, 0.9, 0.5, 0.9, 0.7]  # the engine's output untouched
    assert keep_best_masks(output, 5) is output


def test_stats_percentiles_and_counts():
    stats = RequestStats(window=3)
    assert stats.percentiles("total") is None
    for value in (10, 20, 30, 40):
        stats.record(Status.OK, total=value)
    stats.record(Status.BUSY, total=1)
    assert stats.percentiles("total")[50] == 30.0
    assert stats.counts() == {"OK": 4, "BUSY": 1}


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
    assert [m.sum() for m in out.masks] == [8, 8, 8] and out.masks[1][2:4].all()
    engine.unload()
    with pytest.raises(EngineError, match="not loaded"):
        engine.segment(np.zeros((6, 4, 3), np.uint8), "a", frame_key=1)


def test_lone_surrogates_are_refused():
    with pytest.raises(InstructionError, match="lone surrogate"):
        validate_instruction("cup \ud800")
