"""Node parameters: defaults valid, model options forwarded, every bad one named at once."""
import math

import pytest

from lisa_ros.core.depth import DepthOptions
from lisa_ros.core.node_config import BOUNDS, PARAMETERS, ConfigError, NodeConfig, TargetsConfig
from lisa_ros.core.tracking import TrackingOptions
from lisa_ros.core.types import PairingPolicy


def test_defaults_are_valid_and_model_options_are_forwarded():
    config = NodeConfig.from_parameters({"model.path": "someone/lisa", "model.delay_s": None, "max_queue": 2})
    assert config.engine == "lisa" and config.model_options == {"path": "someone/lisa"}
    assert config.pairing_policy is PairingPolicy.NEWEST and config.max_queue == 2
    # Dotted groups are read by their own modules (depth.*/tracking.*: TargetsConfig; semantic.*: semantic_worker).
    assert {name for name in PARAMETERS if "." not in name} <= {f.name for f in config.__dataclass_fields__.values()}
    assert config.targets == TargetsConfig()  # depth.* / tracking.*: the cores' own defaults


def test_depth_and_tracking_parameters_reach_the_cores_options_and_every_problem_is_named():
    config = NodeConfig.from_parameters({"depth.enabled": True, "depth.tolerance": 0.02, "depth.erosion_px": 0,
                                         "depth.max_depth": 4.0, "tracking.max_age": 3.0,
                                         "tracking.work_width": 160})
    targets = config.targets
    assert targets.depth_enabled and targets.depth_tolerance == 0.02 and targets.tracking_enabled
    assert (targets.depth.erosion_px, targets.depth.max_depth_m) == (0, 4.0)
    assert (targets.tracking.max_age_s, targets.tracking.work_width) == (3.0, 160)
    assert NodeConfig.from_parameters({}).targets.depth.max_depth_m == math.inf  # 0 = no limit
    with pytest.raises(ConfigError) as error:
        NodeConfig.from_parameters({"depth.enabled": "yes", "depth.tolerance": -1, "tracking.work_width": 8,
                                    "tracking.max_age": 0, "tracking.enabled": 1, "depth.min_valid_pixels": 10**6})
    problems = error.value.problems
    for name in ("depth.enabled", "depth.tolerance", "tracking.work_width", "tracking.max_age", "tracking.enabled",
                 "min_valid_pixels"):
        assert sum(name in problem for problem in problems) == 1, (name, problems)


@pytest.mark.parametrize("parameter,options,field", [
    ("depth.erosion_px", DepthOptions, "erosion_px"), ("depth.min_valid_pixels", DepthOptions, "min_valid_pixels"),
    ("tracking.work_width", TrackingOptions, "work_width"), ("tracking.max_age", TrackingOptions, "max_age_s")])
def test_depth_and_tracking_ranges_are_the_option_classes_own(parameter, options, field):
    """One range each: the first value configure refuses is the first the option class refuses, and back."""
    kind, minimum, _, strict = BOUNDS[parameter]
    refused, accepted = (kind(minimum), kind(minimum) + 1) if strict else (kind(minimum) - 1, kind(minimum))
    with pytest.raises(ValueError, match=f"{field} must be"):
        options(**{field: refused})
    with pytest.raises(ConfigError) as caught:
        NodeConfig.from_parameters({"engine": "plumbing", parameter: refused})
    lower = ">" if strict else ">="
    assert caught.value.about([parameter]) == [f"{parameter} must be {lower} {minimum}, got {refused!r}"]
    assert getattr(options(**{field: accepted}), field) == accepted
    NodeConfig.from_parameters({"engine": "plumbing", parameter: accepted})


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


@pytest.mark.parametrize("files,fragment", [
    (None, "does not exist"),  # a local-looking path (absolute) that is not there
    ((), "is a file, not a checkpoint directory"),
    (("config.json",), "lacks tokenizer.model"),
    (("config.json", "tokenizer.model"), "holds no weights"),
])
def test_a_bad_local_checkpoint_is_named_with_the_node_parameter_problems(tmp_path, files, fragment):
    """A missing or incomplete model.path was named only at load, after every other check had passed."""
    pytest.importorskip("torch")
    path = tmp_path / "lisa"
    if files == ():
        path.write_text("not a directory")
    elif files is not None:
        path.mkdir()
        for name in files:
            (path / name).write_text("{}")
    with pytest.raises(ConfigError) as error:
        NodeConfig.from_parameters({"engine": "lisa", "max_queue": 0, "model.path": str(path)})
    assert error.value.about(["max_queue"]) and len(error.value.problems) == 2
    assert [p for p in error.value.about(["model.*"]) if str(path) in p and fragment in p], error.value.problems


def test_values_in_messages_are_plain_numbers_and_lists():
    """`ros2 param set /lisa_node max_queue "[1, 2]"` reaches the node as array('q', [1, 2]), and numpy values
    printed as np.float64(0.5): messages show them as a params file writes them."""
    import array

    import numpy as np

    from lisa_ros.core.bounds import range_problem
    from lisa_ros.core.plumbing_engine import PlumbingEngine
    from lisa_ros.core.semantic import CategoryError, SemanticOptions

    with pytest.raises(ConfigError) as raised:
        NodeConfig.from_parameters({"max_queue": array.array("q", [1, 2]), "engine": ["lisa", np.str_("plumbing")]})
    text = str(raised.value)
    assert "max_queue must be an integer, got [1, 2]" in text
    assert "got ['lisa', 'plumbing']" in text and "array(" not in text and "np." not in text, text
    assert range_problem("depth.tolerance", np.float64(-0.5), (float, 0, None, False)).endswith("got -0.5")
    with pytest.raises(ValueError, match=r"'delay_s' must be float, got \[0\.5, 1\.0\]$"):
        PlumbingEngine.from_options({"delay_s": [np.float64(0.5), np.float64(1.0)]})
    with pytest.raises(CategoryError, match=r"max_categories must be int, got \[3\]$"):
        SemanticOptions.from_mapping({"max_categories": array.array("q", [3])})
