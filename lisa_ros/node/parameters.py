"""LisaNode's parameters: declared with when each takes effect, checked before a change is accepted, the live
ones applied at once. Their names, defaults and ranges are core.node_config's; configure reads them all."""
from __future__ import annotations

import dataclasses
import math

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException
from rclpy.parameter import Parameter
from rclpy.subscription import Subscription

from lisa_ros.core.engine_options import (
    option_default,
    option_description,
    option_keys,
    undeclared_parameter_reason,
)
from lisa_ros.core.lifecycle import NodeState, frozen_parameter_advice
from lisa_ros.core.node_config import (
    BOUNDS,
    LIVE_PARAMETERS,
    PARAMETERS,
    RECONFIGURE_GROUPS,
    RECONFIGURE_PARAMETERS,
    START_UP_PARAMETERS,
    ConfigError,
    NodeConfig,
    when_applied,
)
from lisa_ros.core.worker import WorkerSettings
from lisa_ros.node.qos_overrides import entity_qos, qos_override_problems
from lisa_ros.node.rclpy_internals import declare_qos_overrides, parameter_overrides
from lisa_ros.node.requests import IMAGE_QOS


def _when_applied(name: str) -> str:
    """Tells `ros2 param describe` readers when a change takes effect."""
    return f" [{when_applied(name)}]"


class NodeParameters:
    """LisaNode's parameter handling (a mixin: the state it reads is LisaNode's)."""

    def _declare_parameters(self) -> None:
        """Every parameter of core.node_config and the engine's ``model.*`` options, with the callbacks that check
        and apply a change."""
        dynamic = dict(dynamic_typing=True)  # types are checked at configure, with clear errors
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description + _when_applied(name), read_only=name in START_UP_PARAMETERS, **dynamic),
                ignore_override=self._override_means_unset(name, default))
            if name in BOUNDS:
                self._declare_range(name)
        self._engine_option_names: list[str] = []  # the model.* parameters declared now
        self.add_on_set_parameters_callback(self._check_parameters)
        self._declare_engine_options(self.get_parameter("engine").value)
        self.add_post_set_parameters_callback(self._apply_live_parameters)
        self.add_post_set_parameters_callback(self._follow_engine)

    def _declare_range(self, name: str) -> None:
        """The range configure checks, in the descriptor. Added after declaring: a params-file value out of
        range would otherwise stop the node at start-up instead of failing configure with every problem named."""
        kind, minimum, maximum, _ = BOUNDS[name]
        descriptor = self.describe_parameter(name)
        if kind is int:
            descriptor.integer_range = [IntegerRange(from_value=int(minimum), to_value=2**63 - 1 if maximum is None
                                                     else int(maximum), step=0)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(minimum), to_value=math.inf if maximum is None else float(maximum), step=0.0)]
        try:
            self.set_descriptor(name, descriptor)
        except InvalidParameterValueException:
            pass  # configure names the problem

    def _declare_engine_options(self, engine: str) -> None:
        """``model.<key>`` for the options of ``engine`` only (a production node has no fault-injection keys);
        another engine's are undeclared. An unknown engine gets every engine's, for configure to name it.

        Each is declared with the engine's default, never unset: `ros2 param dump` writes an unset parameter as
        ``null``, which a params file gives back as the string 'null' (ros2cli#965), so a dump could not be
        relaunched."""
        wanted = [f"model.{key}" for key in option_keys(engine)]
        for name in self._engine_option_names:
            if name not in wanted:
                self.undeclare_parameter(name)
        for name in wanted:
            if self.has_parameter(name):
                continue
            key, default = name.removeprefix("model."), option_default(name.removeprefix("model."), engine)
            self.declare_parameter(name, default, ParameterDescriptor(
                description=option_description(key) + _when_applied("model."), dynamic_typing=True),
                ignore_override=self._override_means_unset(name, default))
        self._engine_option_names = wanted

    def _override_means_unset(self, name: str, default) -> bool:
        """A params-file value that stands for "no value", so the default is declared instead: the string 'null'
        (`ros2 param dump` writes an unset parameter as null, read back as a string: ros2cli#965), or an empty list
        (rcl reads `[]` as no value, which a later dump would write as null)."""
        override = parameter_overrides(self).get(name)
        if override is None:
            return False
        if override.value == "null":
            self.get_logger().warning(f"{name}: 'null' (how ros2 param dump writes an unset parameter) taken as "
                                      f"unset: the default {default!r} applies")
            return True
        return override.type_ is Parameter.Type.NOT_SET

    def _follow_engine(self, parameters: list[Parameter]) -> None:
        """A new ``engine`` (set while unconfigured) brings its own ``model.*`` options."""
        for parameter in parameters:
            if parameter.name == "engine":
                self._declare_engine_options(parameter.value)

    def _check_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Refuses deletions, model/camera settings while configured, and live values configure would refuse."""
        own = set(PARAMETERS) | set(self._engine_option_names)
        mine = [p for p in parameters if p.name in own]
        # NOT_SET on a declared parameter is a deletion; on a new one, its declaration (an unset model.* option)
        deleted = [p.name for p in mine if p.type_ is Parameter.Type.NOT_SET and self.has_parameter(p.name)]
        if deleted:  # `ros2 param delete` undeclared it, and every later configure failed reading it
            return self._refused(f"{', '.join(deleted)} cannot be deleted: lisa_node reads it at every configure. "
                                 "Set the value you want instead (a model.* option left unset in the params file "
                                 "takes the engine default)")
        frozen = [p.name for p in mine
                  if p.name in RECONFIGURE_PARAMETERS or p.name.split(".")[0] in RECONFIGURE_GROUPS]
        if frozen and self._state is not NodeState.UNCONFIGURED:
            return self._refused(f"{', '.join(frozen)} take effect when the model loads; lisa_node is "
                                 f"{self._state.value}. To change it: {frozen_parameter_advice(self._state)}")
        live = {p.name: p.value for p in mine if p.name in LIVE_PARAMETERS}
        if live:
            try:
                NodeConfig.from_parameters(self._parameter_values() | live)
            except ConfigError as error:
                if problems := error.about(live):
                    return self._refused("; ".join(problems))
        return SetParametersResult(successful=True)

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> SetParametersResult:
        """What the set_parameters services call (`ros2 param set`, `ros2 param load`): a name the node does not
        declare is refused with what can be set instead (rclpy's reason was "Invalid access to undeclared
        parameter(s): []")."""
        undeclared = [p.name for p in parameter_list if not self.has_parameter(p.name)]
        if undeclared:
            engine = self.get_parameter("engine").value
            names = self.list_parameters([], 0).names
            return self._refused("; ".join(undeclared_parameter_reason(name, engine, names) for name in undeclared))
        return super().set_parameters_atomically(parameter_list)

    def _refused(self, reason: str) -> SetParametersResult:
        self.get_logger().warning(f"parameter change refused: {reason}")
        return SetParametersResult(successful=False, reason=reason)

    def _parameter_values(self) -> dict:
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        values.update({name: self.get_parameter(name).value for name in self._engine_option_names})
        return values

    def _apply_live_parameters(self, parameters: list[Parameter]) -> None:
        """A live change reaches the node at once: /diagnostics is retimed in every state; once configured, the
        worker's settings are swapped whole (the worker thread reads one settings object or the other, never a
        half-updated one). Unconfigured, the next configure reads the rest; a configure already loading the
        model reads them again when the load ends (``_with_live_values``)."""
        live = {p.name: p.value for p in parameters if p.name in LIVE_PARAMETERS}
        if not live:
            return
        with self._state_lock:
            if "diagnostics_period" in live:  # checked in _check_parameters
                self._retime_diagnostics(live["diagnostics_period"])
            config = self._config
            if config is None or self._state is NodeState.UNCONFIGURED:
                return
            config = self._config = self._with_live_values(config)
            worker = self._worker
            if worker is not None:
                worker.settings = self._worker_settings(config)
        self.get_logger().info("applied " + ", ".join(f"{name} = {value!r}" for name, value in live.items()))

    def _with_live_values(self, config: NodeConfig) -> NodeConfig:
        """``config`` with the live parameters' current values (each checked in _check_parameters when set)."""
        try:
            fresh = NodeConfig.from_parameters(self._parameter_values())
        except ConfigError as error:  # not expected: only live values change while configured
            self.get_logger().error(f"live parameters not applied: {error}")
            return config
        return dataclasses.replace(config, **{name: getattr(fresh, name) for name in LIVE_PARAMETERS})

    def _worker_settings(self, config: NodeConfig) -> WorkerSettings:
        return WorkerSettings(
            pairing_policy=config.pairing_policy,
            max_queue=config.max_queue,
            max_image_age=config.max_image_age,
            next_frame_timeout=config.next_frame_timeout,
            inference_timeout=config.inference_timeout,
            max_masks=config.max_masks,
            min_mask_score=config.min_mask_score,
            image_topic=self.resolve_topic_name("image"),
        )

    def _activate_qos_problems(self, values: dict) -> list[str]:
        """The qos_overrides of what activate creates (camera, depth, 3D targets, tracking), checked at configure
        with the other problems, before the model loads. The camera's parameters are declared now as rclpy would
        when subscribing."""
        image_topic = self.resolve_topic_name("image")
        cameras = [image_topic] + ([f"{image_topic}/compressed"] if values["compressed"] is True else [])
        entities = [(topic, "subscription") for topic in cameras]
        if values["depth.enabled"] is True:
            entities += [(self.resolve_topic_name(t), "subscription") for t in ("depth", "depth_camera_info")]
            entities += [(self.resolve_topic_name(t), "publisher")
                         for t in ("~/targets_3d", "~/target_point", "~/target_cloud", "~/markers")]
        if values["tracking.enabled"] is True:
            entities.append((self.resolve_topic_name("~/tracked"), "publisher"))
        problems = qos_override_problems(self, entities)
        if not problems:
            for topic in cameras:
                declare_qos_overrides(self, Subscription, topic, entity_qos(IMAGE_QOS))
        return problems
