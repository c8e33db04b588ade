"""`ros2 param dump /lisa_node > p.yaml`, then a relaunch with `--params-file p.yaml`, on both engines.

The dump is made as ros2param's dump verb makes it (ros2cli, ros2param/verb/dump.py): list_parameters, then
get_parameters of the sorted names over the node's parameter services, each value read as
ros2param.api.get_value reads it (None for NOT_SET), nested at each '.' under ``<node full name>:
ros__parameters:`` and written with ``yaml.dump(..., default_flow_style=False)``. Unset engine options were
dumped as ``null``, which the relaunch read as the string 'null' (ros2cli#965): configure failed.
"""
import pytest
import yaml

from conftest import LisaNodeProcess, NodeIO, make_image_msg

pytestmark = pytest.mark.ros


def _value(parameter_value):
    """ros2param.api.get_value."""
    from rcl_interfaces.msg import ParameterType as T

    fields = {T.PARAMETER_BOOL: "bool_value", T.PARAMETER_INTEGER: "integer_value",
              T.PARAMETER_DOUBLE: "double_value", T.PARAMETER_STRING: "string_value"}
    arrays = {T.PARAMETER_BYTE_ARRAY: "byte_array_value", T.PARAMETER_BOOL_ARRAY: "bool_array_value",
              T.PARAMETER_INTEGER_ARRAY: "integer_array_value", T.PARAMETER_DOUBLE_ARRAY: "double_array_value",
              T.PARAMETER_STRING_ARRAY: "string_array_value"}
    if parameter_value.type in fields:
        return getattr(parameter_value, fields[parameter_value.type])
    if parameter_value.type in arrays:
        return list(getattr(parameter_value, arrays[parameter_value.type]))
    return None


def _insert(dictionary: dict, key: str, value) -> None:
    """ros2param's DumpVerb.insert_dict."""
    head, *rest = key.split(".", 1)
    if rest:
        _insert(dictionary.setdefault(head, {}), rest[0], value)
    else:
        dictionary[key] = value


def param_dump(probe, node) -> str:
    """What `ros2 param dump <node>` prints."""
    from rcl_interfaces.srv import GetParameters, ListParameters

    full_name = node.topic("~/")[:-1]
    listed = probe.call(probe.client(node.topic("~/list_parameters"), ListParameters), ListParameters.Request())
    names = sorted(listed.result.names)
    got = probe.call(probe.client(node.topic("~/get_parameters"), GetParameters), GetParameters.Request(names=names))
    dumped = {full_name: {"ros__parameters": {}}}
    for name, value in zip(names, got.values, strict=True):
        _insert(dumped[full_name]["ros__parameters"], name, _value(value))
    return yaml.dump(dumped, default_flow_style=False)


def _round_trip(lisa_node_process, ros_probe, tmp_path, params: dict, timeout: float = 60.0) -> str:
    """Dump a node started with ``params``, relaunch it from the dump alone and check it answers; the dump."""
    first = lisa_node_process(params_file=None, params=params, start_timeout=timeout)
    dump = param_dump(ros_probe, first)
    first.stop()
    (tmp_path / "p.yaml").write_text(dump)
    relaunched = LisaNodeProcess(namespace=first.namespace, params_files=[tmp_path / "p.yaml"],
                                 workdir=tmp_path / "relaunched")
    try:
        relaunched.wait_for_state(ros_probe, "active", timeout)  # configure read every dumped value
        io = NodeIO(ros_probe, relaunched)
        io.publish_frame(make_image_msg(width=32, height=24, stamp=(1, 0)))
        answer = io.call("Please segment the cup.", timeout=timeout)
        assert answer.status in (answer.STATUS_OK, answer.STATUS_NOT_FOUND), answer.status_message  # the model's
        assert answer.model_id and answer.timing_names, answer  # an engine answer, not a refusal
        assert param_dump(ros_probe, relaunched) == dump  # the relaunched node runs what was dumped
        assert "Traceback" not in relaunched.log, relaunched.log_tail()
    finally:
        relaunched.stop()
    return dump


def test_a_param_dump_of_the_plumbing_engine_relaunches(lisa_node_process, ros_probe, tmp_path):
    dump = _round_trip(lisa_node_process, ros_probe, tmp_path, {"engine": "plumbing"})
    model = yaml.safe_load(dump)[next(iter(yaml.safe_load(dump)))]["ros__parameters"]["model"]
    assert model["delay_s"] == 0.0 and model["load_delay_s"] == 0.0  # real defaults, not null


def test_a_param_dump_of_the_lisa_engine_relaunches(lisa_node_process, ros_probe, tmp_path,
                                                    answering_tiny_lisa_checkpoint):
    params = {"engine": "lisa", "model.path": str(answering_tiny_lisa_checkpoint), "model.device": "cpu",
              "model.precision": "fp32", "model.max_new_tokens": 12, "model.local_files_only": True,
              "inference_timeout": 120.0}
    dump = _round_trip(lisa_node_process, ros_probe, tmp_path, params, timeout=180.0)
    model = yaml.safe_load(dump)[next(iter(yaml.safe_load(dump)))]["ros__parameters"]["model"]
    assert model["frame_cache_size"] == 4 and model["vision_tower"] == model["revision"] == model["cache_dir"] == ""


def test_null_from_an_older_dump_is_taken_as_unset(lisa_node_process, ros_probe, tmp_path):
    """A dump made before the options had defaults: `delay_s: null` read back as the string 'null'."""
    params = tmp_path / "old_dump.yaml"
    params.write_text("/**:\n  ros__parameters:\n    engine: plumbing\n    model:\n      delay_s: null\n"
                      "      raise_on: null\n")
    node = LisaNodeProcess(namespace=f"/old_dump_{id(tmp_path)}", params_files=[params], workdir=tmp_path / "node")
    try:
        node.wait_for_state(ros_probe, "active", 60)
        assert "model.delay_s: 'null' (how ros2 param dump writes an unset parameter) taken as unset" in node.log
        dumped = yaml.safe_load(param_dump(ros_probe, node))
        model = dumped[node.topic("~/")[:-1]]["ros__parameters"]["model"]
        assert model["delay_s"] == 0.0 and model["raise_on"] == ""
    finally:
        node.stop()
