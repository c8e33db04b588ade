"""Node settings: defaults, types and validation (no ROS).

The node declares every name in PARAMETERS (plus ``model.<key>`` for every engine option,
``MODEL_OPTION_KEYS`` from ``lisa_ros.core.engine_options``)
and calls ``NodeConfig.from_parameters`` at configure, which reports every
problem at once (node parameters and engine options together), each naming the
parameter and what it accepts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from lisa_ros.core.engine import ENGINE_TYPES, create_engine
from lisa_ros.core.engine_options import MODEL_OPTION_KEYS
from lisa_ros.core.image import DEFAULT_MAX_PIXELS
from lisa_ros.core.instruction import DEFAULT_MAX_CHARS
from lisa_ros.core.worker import PairingPolicy

__all__ = ["MODEL_OPTION_KEYS", "PARAMETERS", "ConfigError", "NodeConfig"]

# name -> (default, description)
PARAMETERS: dict[str, tuple[Any, str]] = {
    "engine": ("lisa", "engine type: 'lisa', or 'plumbing' (deterministic, for tests only)"),
    "pairing_policy": ("newest", "'newest': answer on the newest frame when the instruction arrives; "
                                 "'next': wait for the next frame"),
    "max_image_age": (2.0, "s; refuse (STALE_IMAGE) a newest frame received longer ago than this; 0 = no limit"),
    "next_frame_timeout": (2.0, "s; with pairing_policy 'next', answer NO_IMAGE if no frame comes in time"),
    "max_queue": (4, "instructions waiting for the model; more are answered BUSY"),
    "inference_timeout": (120.0, "s; an engine call running longer is answered TIMEOUT; 0 = no limit"),
    "max_instruction_chars": (DEFAULT_MAX_CHARS, "longer instructions are refused (INVALID_INSTRUCTION)"),
    "max_image_pixels": (DEFAULT_MAX_PIXELS, "larger images are refused before decoding (INVALID_IMAGE)"),
    "max_masks": (16, "most masks in one answer; beyond it the highest-scoring are kept and the message says "
                      "how many were dropped"),
    "compressed": (False, "also subscribe to sensor_msgs/CompressedImage on <image>/compressed"),
    "publish_overlay": (False, "always publish ~/overlay (otherwise only while someone subscribes)"),
    "overlay_alpha": (0.5, "mask opacity in ~/overlay, 0..1"),
    "auto_configure": (True, "configure (load the model) at start-up"),
    "auto_activate": (True, "activate after auto-configure"),
    "diagnostics_period": (1.0, "s between /diagnostics messages"),
}


class ConfigError(ValueError):
    """One or more parameters are invalid; the message lists each (``problems``: one entry per problem)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid parameters: " + "; ".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    engine: str
    model_options: dict[str, Any]
    pairing_policy: PairingPolicy
    max_image_age: float
    next_frame_timeout: float
    max_queue: int
    inference_timeout: float
    max_instruction_chars: int
    max_image_pixels: int
    max_masks: int
    compressed: bool
    publish_overlay: bool
    overlay_alpha: float
    auto_configure: bool
    auto_activate: bool
    diagnostics_period: float

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> NodeConfig:
        """values: parameter name -> value (None = not set). Raises ConfigError."""
        problems: list[str] = []
        get = {name: values.get(name, default) for name, (default, _) in PARAMETERS.items()}
        get = {name: (PARAMETERS[name][0] if value is None else value) for name, value in get.items()}

        def number(name: str, kind: type, minimum: float, *, strict: bool = False, maximum: float | None = None):
            value = get[name]
            wrong_kind = kind is int and not isinstance(value, int)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or wrong_kind:
                problems.append(f"{name} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
                return kind(PARAMETERS[name][0])
            if value < minimum or (strict and value == minimum) or (maximum is not None and value > maximum):
                bound = f"> {minimum}" if strict else f">= {minimum}"
                upper = '' if maximum is None else f' and <= {maximum}'
                problems.append(f"{name} must be {bound}{upper}, got {value!r}")
            return kind(value)

        def flag(name: str) -> bool:
            if not isinstance(get[name], bool):
                problems.append(f"{name} must be true or false, got {get[name]!r}")
                return bool(PARAMETERS[name][0])
            return get[name]

        engine = get["engine"]
        if engine not in ENGINE_TYPES:
            problems.append(f"engine must be one of {list(ENGINE_TYPES)}, got {engine!r}")
        try:
            policy = PairingPolicy(get["pairing_policy"])
        except ValueError:
            problems.append(f"pairing_policy must be 'newest' or 'next', got {get['pairing_policy']!r}")
            policy = PairingPolicy.NEWEST
        model_options = {key: values[f"model.{key}"] for key in MODEL_OPTION_KEYS
                         if values.get(f"model.{key}") is not None}
        if engine in ENGINE_TYPES:
            problems += _engine_option_problems(engine, model_options)
        config = cls(
            engine=engine,
            model_options=model_options,
            pairing_policy=policy,
            max_image_age=number("max_image_age", float, 0),
            next_frame_timeout=number("next_frame_timeout", float, 0, strict=True),
            max_queue=number("max_queue", int, 1),
            inference_timeout=number("inference_timeout", float, 0),
            max_instruction_chars=number("max_instruction_chars", int, 1),
            max_image_pixels=number("max_image_pixels", int, 1),
            max_masks=number("max_masks", int, 1),
            compressed=flag("compressed"),
            publish_overlay=flag("publish_overlay"),
            overlay_alpha=number("overlay_alpha", float, 0, maximum=1),
            auto_configure=flag("auto_configure"),
            auto_activate=flag("auto_activate"),
            diagnostics_period=number("diagnostics_period", float, 0, strict=True),
        )
        if problems:
            raise ConfigError(problems)
        return config


def _engine_option_problems(engine: str, options: dict[str, Any]) -> list[str]:
    """The engine's own checks of its model.* options (it is built, not loaded), as problems."""
    try:
        create_engine(engine, options)
    except ValueError as error:
        return [f"model options: {error}"]
    except ImportError as error:
        return [f"engine {engine!r} cannot be imported ({error}); install requirements/ml.txt"]
    return []
