"""Node parameters: defaults valid, model options forwarded, every bad one named at once."""
import pytest

from lisa_ros.core.config import PARAMETERS, ConfigError, NodeConfig
from lisa_ros.core.worker import PairingPolicy


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
