"""Node parameters: defaults valid, model options forwarded, every bad one named at once."""
import pytest

from lisa_ros.core.config import PARAMETERS, ConfigError, NodeConfig
from lisa_ros.core.worker import PairingPolicy


def test_defaults_are_valid_and_model_options_are_forwarded():
    config = NodeConfig.from_parameters({"model.path": "/ckpt", "model.delay_s": None, "max_queue": 2})
    assert config.engine == "lisa" and config.model_options == {"path": "/ckpt"}
    assert config.pairing_policy is PairingPolicy.NEWEST and config.max_queue == 2
    # Dotted groups (semantic.*) are read by their own module (lisa_ros.core.semantic_worker.semantic_config).
    assert {name for name in PARAMETERS if "." not in name} <= {f.name for f in config.__dataclass_fields__.values()}


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
