"""Node settings: defaults, types and validation (no ROS).

The node declares every name in PARAMETERS (plus ``model.<key>`` for each option of the engine
it runs, ``option_keys(engine)`` from ``lisa_ros.core.engine_options``)
and calls ``NodeConfig.from_parameters`` at configure, which reports every
problem at once (node parameters and engine options together), each naming the
parameter and what it accepts.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from lisa_ros.core.bounds import Bound, range_problem, shown
from lisa_ros.core.depth import DEPTH_BOUNDS, DepthOptions
from lisa_ros.core.engine import ENGINE_TYPES, create_engine
from lisa_ros.core.engine_options import MODEL_OPTION_KEYS
from lisa_ros.core.image import DEFAULT_MAX_PIXELS
from lisa_ros.core.instruction import DEFAULT_MAX_CHARS
from lisa_ros.core.masks import MASK_ENCODINGS
from lisa_ros.core.tracking import TRACKING_BOUNDS, TrackingOptions
from lisa_ros.core.types import PairingPolicy

__all__ = ["MODEL_OPTION_KEYS", "PARAMETERS", "ConfigError", "NodeConfig", "when_applied"]

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
    "min_mask_score": (0.0, "masks whose score (SAM's IoU prediction) is below it are dropped; an answer left with "
                            "none is NOT_FOUND, its message giving the best score; 0 = off (`lisa-ros eval` with "
                            "labelled negatives recommends a value)"),
    "compressed": (False, "also subscribe to sensor_msgs/CompressedImage on <image>/compressed"),
    "result_mask_encoding": ("raw", "masks in SegmentationResult (topic, service, action): 'raw' = masks[] "
                                    "(mono8 Image), 'png' = compressed_masks[] (lossless 1-bit PNG, ~0.3% of the "
                                    "size); mask_encoding says which"),
    "publish_overlay": (False, "always publish ~/overlay (otherwise only while someone subscribes)"),
    "overlay_alpha": (0.5, "mask opacity in ~/overlay, 0..1"),
    "auto_configure": (True, "configure (load the model) at start-up"),
    "auto_activate": (True, "activate after auto-configure"),
    "diagnostics_period": (1.0, "s between /diagnostics messages"),
    "detections.enabled": (True, "publish ~/detections (vision_msgs/Detection2DArray) where vision_msgs is installed"),
    # 3D targets and tracking (lisa_ros.node.targets_glue; docs/3d-and-tracking.md)
    "depth.enabled": (False, "subscribe to depth + depth_camera_info and publish ~/targets_3d, ~/target_point, "
                             "~/target_cloud, ~/markers"),
    "depth.tolerance": (0.05, "s; largest colour/depth stamp difference for a pair"),
    "depth.erosion_px": (2, "pixels eroded off each mask before measuring (edge pixels mix depths)"),
    "depth.min_valid_pixels": (20, "fewer valid depth pixels under a mask: no point (TOO_FEW_VALID_PIXELS)"),
    "depth.max_depth": (0.0, "m; farther depth values are invalid; 0 = no limit"),
    "tracking.enabled": (True, "track the answers' masks on every new camera frame, published on ~/tracked"),
    "tracking.max_age": (10.0, "s (by stamps); stop tracking an answer this much older than its frame"),
    "tracking.work_width": (320, "px; width of the grey frames the tracking flow runs on"),
    # Semantic mode (lisa_ros.core.semantic_worker.semantic_config reads and checks these)
    "semantic.categories": ([], "default category list of ~/segment_semantic and ~/semantic ([] = none)"),
    "semantic.descriptions_file": ("", "YAML 'category: description' file; its descriptions always win"),
    "semantic.generate_descriptions": (True, "let the LLM describe categories the file lacks (cached on disk)"),
    "semantic.description_cache": ("", "description cache file; '' = $XDG_CACHE_HOME/lisa_ros/descriptions.json"),
    "semantic.max_description_tokens": (48, "longest generated description, in tokens (1..256)"),
    "semantic.filter_threshold": (0.5, "keep a category when the filter's P(yes) >= this, 0..1; 0 = no filter"),
    "semantic.label_threshold": (0.0, "mask logit below which a pixel stays unlabelled (0 = SAM's threshold)"),
    "semantic.max_categories": (1000, "most categories in one request (1..1000)"),
    "semantic.max_batch_tokens": (2048, "tokens per batched forward pass (64..65536): bounds memory"),
    "semantic.rate_hz": (0.0, "publish ~/semantic on the newest frame at this rate (needs semantic.categories); "
                              "0 = off"),
}


# Numeric parameters: name -> (type, minimum, maximum or None, strict minimum). One table for the checks of
# from_parameters and the ranges the node declares (so `ros2 param describe` shows what configure checks);
# the depth/tracking options' own ranges come from the classes that check them.
BOUNDS: dict[str, Bound] = {
    "max_image_age": (float, 0, None, False),
    "next_frame_timeout": (float, 0, None, True),
    "max_queue": (int, 1, None, False),
    "inference_timeout": (float, 0, None, False),
    "max_instruction_chars": (int, 1, None, False),
    "max_image_pixels": (int, 1, None, False),
    "max_masks": (int, 1, None, False),
    "min_mask_score": (float, 0, 1, False),
    "overlay_alpha": (float, 0, 1, False),
    "diagnostics_period": (float, 0, None, True),
    "depth.tolerance": (float, 0, None, False),
    "depth.erosion_px": DEPTH_BOUNDS["erosion_px"],
    "depth.min_valid_pixels": DEPTH_BOUNDS["min_valid_pixels"],
    "depth.max_depth": (float, 0, None, False),  # 0 = no limit: DepthOptions.max_depth_m = inf
    "tracking.work_width": TRACKING_BOUNDS["work_width"],
    "tracking.max_age": TRACKING_BOUNDS["max_age_s"],
}
# Applied to the running node at once (`ros2 param set`), validated like at configure.
LIVE_PARAMETERS = ("max_queue", "max_image_age", "next_frame_timeout", "inference_timeout", "publish_overlay",
                   "overlay_alpha", "pairing_policy", "max_instruction_chars", "max_masks", "min_mask_score",
                   "diagnostics_period", "result_mask_encoding")
# Used when the model loads or the camera is subscribed: settable only while unconfigured (with model.*).
RECONFIGURE_PARAMETERS = ("engine", "compressed", "max_image_pixels")
# Groups read when the model loads or the node activates (model.*, 3D targets, tracking, semantic mode): likewise.
RECONFIGURE_GROUPS = ("model", "depth", "tracking", "semantic")
# Read once, at start-up.
START_UP_PARAMETERS = ("auto_configure", "auto_activate", "detections.enabled")
# String parameters with a fixed set of values: name -> the values configure accepts.
CHOICES: dict[str, tuple[str, ...]] = {
    "engine": tuple(ENGINE_TYPES),
    "pairing_policy": tuple(policy.value for policy in PairingPolicy),
}


def when_applied(name: str) -> str:
    """When a change of parameter ``name`` takes effect (``ros2 param describe`` and docs/parameters.md say it)."""
    if name in LIVE_PARAMETERS:
        return "applied at once"
    if name in START_UP_PARAMETERS:
        return "read at start-up"
    return "settable while unconfigured; read at configure"


class ConfigError(ValueError):
    """One or more parameters are invalid; the message lists each (``problems``: one entry per problem,
    ``parameters``: the parameter each is about, "model.*" for the engine's options)."""

    def __init__(self, problems: list[str], parameters: list[str] | None = None) -> None:
        super().__init__("invalid parameters: " + "; ".join(problems))
        self.problems = problems
        self.parameters = parameters or [""] * len(problems)

    def about(self, names) -> list[str]:
        """The problems with these parameters only."""
        return [problem for problem, name in zip(self.problems, self.parameters) if name in names]


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
    min_mask_score: float
    compressed: bool
    result_mask_encoding: str
    publish_overlay: bool
    overlay_alpha: float
    auto_configure: bool
    auto_activate: bool
    diagnostics_period: float
    targets: TargetsConfig

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> NodeConfig:
        """values: parameter name -> value (None = not set). Raises ConfigError."""
        problems: list[str] = []
        about: list[str] = []  # the parameter of each problem

        def problem(name: str, text: str) -> None:
            problems.append(text)
            about.append(name)

        get = {name: values.get(name, default) for name, (default, _) in PARAMETERS.items()}
        get = {name: (PARAMETERS[name][0] if value is None else value) for name, value in get.items()}

        def number(name: str):
            kind = BOUNDS[name][0]
            value = get[name]
            wrong_kind = kind is int and not isinstance(value, int)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or wrong_kind:
                problem(name, f"{name} must be a{'n integer' if kind is int else ' number'}, got {shown(value)}")
                return kind(PARAMETERS[name][0])
            if (text := range_problem(name, value, BOUNDS[name])) is not None:
                problem(name, text)
            return kind(value)

        def flag(name: str) -> bool:
            if not isinstance(get[name], bool):
                problem(name, f"{name} must be true or false, got {shown(get[name])}")
                return bool(PARAMETERS[name][0])
            return get[name]

        engine = get["engine"]
        if engine not in CHOICES["engine"]:
            problem("engine", f"engine must be one of {list(CHOICES['engine'])}, got {shown(engine)}")
        try:
            policy = PairingPolicy(get["pairing_policy"])
        except ValueError:
            problem("pairing_policy", f"pairing_policy must be 'newest' or 'next', got {shown(get['pairing_policy'])}")
            policy = PairingPolicy.NEWEST
        mask_encoding = get["result_mask_encoding"]
        if mask_encoding not in MASK_ENCODINGS:
            problem("result_mask_encoding", f"result_mask_encoding must be 'raw' or 'png', got {mask_encoding!r}")
            mask_encoding = PARAMETERS["result_mask_encoding"][0]
        model_options = {key: values[f"model.{key}"] for key in MODEL_OPTION_KEYS
                         if values.get(f"model.{key}") is not None}
        if engine in ENGINE_TYPES:
            for text in _engine_option_problems(engine, model_options):
                problem("model.*", text)
        config = cls(
            engine=engine,
            model_options=model_options,
            pairing_policy=policy,
            max_image_age=number("max_image_age"),
            next_frame_timeout=number("next_frame_timeout"),
            max_queue=number("max_queue"),
            inference_timeout=number("inference_timeout"),
            max_instruction_chars=number("max_instruction_chars"),
            max_image_pixels=number("max_image_pixels"),
            max_masks=number("max_masks"),
            min_mask_score=number("min_mask_score"),
            compressed=flag("compressed"),
            result_mask_encoding=mask_encoding,
            publish_overlay=flag("publish_overlay"),
            overlay_alpha=number("overlay_alpha"),
            auto_configure=flag("auto_configure"),
            auto_activate=flag("auto_activate"),
            diagnostics_period=number("diagnostics_period"),
            targets=_targets_config(number, flag, problem, problems),
        )
        if problems:
            raise ConfigError(problems, about)
        return config


@dataclasses.dataclass(frozen=True)
class TargetsConfig:
    """depth.* and tracking.*: what the targets glue (lisa_ros.node.targets_glue) is built from."""

    depth_enabled: bool = False
    depth_tolerance: float = 0.05
    depth: DepthOptions = DepthOptions()
    tracking_enabled: bool = True
    tracking: TrackingOptions = TrackingOptions()


def _targets_config(number, flag, problem, problems: list[str]) -> TargetsConfig:
    """The depth.* / tracking.* parameters, then (if each is fine alone) by the cores' own option classes."""
    before = len(problems)
    max_depth = number("depth.max_depth")
    values = dict(erosion_px=number("depth.erosion_px"),
                  min_valid_pixels=number("depth.min_valid_pixels"),
                  max_depth_m=max_depth if max_depth > 0 else math.inf)
    depth, tracking = DepthOptions(), TrackingOptions()
    try:
        if len(problems) == before:
            depth = DepthOptions(**values)
    except ValueError as error:
        problem("depth.min_valid_pixels", f"depth.*: {error}")
    before = len(problems)
    work_width = number("tracking.work_width")
    max_age = number("tracking.max_age")
    try:
        if len(problems) == before:
            tracking = TrackingOptions(work_width=work_width, max_age_s=max_age)
    except ValueError as error:
        problem("tracking.work_width", f"tracking.*: {error}")
    return TargetsConfig(flag("depth.enabled"), number("depth.tolerance"), depth,
                         flag("tracking.enabled"), tracking)


def _engine_option_problems(engine: str, options: dict[str, Any]) -> list[str]:
    """The engine's own checks of its model.* options (it is built, not loaded), as problems."""
    try:
        create_engine(engine, options)
    except ValueError as error:
        return [f"model options: {error}"]
    except ImportError as error:
        return [f"engine {engine!r} cannot be imported ({error}); install requirements/runtime.txt"]
    return []
