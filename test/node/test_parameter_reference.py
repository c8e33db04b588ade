"""docs/parameters.md's rows against the parameters a real LisaNode declares (rclpy), for each engine."""
import math

import pytest
from rclpy.parameter import Parameter

from lisa_ros.tools.reference import parameter_rows, ros_type, shown


def declared_rows(node) -> dict[str, dict[str, str]]:
    """The node's own parameters (not rclpy's use_sim_time / start_type_description_service) as reference rows."""
    rows = {}
    for name in node.list_parameters([], 0).names:
        if name in ("use_sim_time", "start_type_description_service") or name.startswith("qos_overrides."):
            continue
        descriptor = node.describe_parameter(name)
        value = node.get_parameter(name).value
        if descriptor.integer_range:
            bound = descriptor.integer_range[0]
            upper = None if bound.to_value == 2**63 - 1 else bound.to_value
        elif descriptor.floating_point_range:
            bound = descriptor.floating_point_range[0]
            upper = None if math.isinf(bound.to_value) else bound.to_value
        rows[name] = dict(description=descriptor.description, read_only=descriptor.read_only, value=value,
                          range=(bound.from_value, upper) if descriptor.integer_range
                          or descriptor.floating_point_range else None)
    return rows


@pytest.mark.ros
@pytest.mark.parametrize("engine", ["lisa", "plumbing"])
def test_reference_rows_are_what_the_node_declares(engine, ros_context):
    from lisa_ros.node.lisa_node import LisaNode

    node = LisaNode(f"lisa_reference_probe_{engine}", namespace="/reference_probe", context=ros_context,
                    parameter_overrides=[Parameter("engine", value=engine)])
    try:
        declared = declared_rows(node)
    finally:
        node.release("test over")
        node.destroy_node()
    rows = {row["name"]: row for row in parameter_rows()}
    assert set(declared) <= set(rows), set(declared) - set(rows)
    node_rows = {name for name in rows if not name.startswith("model.")}
    assert node_rows <= set(declared), node_rows - set(declared)
    for name, found in declared.items():
        row = rows[name]
        assert found["description"] == f"{row['description']} [{row['applies']}]", name
        assert found["read_only"] == (row["applies"] == "read at start-up"), name
        if name != "engine":  # model.* are declared with their engine's defaults, so a dump relaunches
            assert shown(found["value"]) == row["default"] and ros_type(found["value"]) == row["type"], name
        if found["range"] is not None:
            low, high = found["range"]  # a strict minimum (> 0) is declared from 0: configure checks it
            expected = (f"{low:g} .. {high:g}",) if high is not None else (f">= {low:g}", f"> {low:g}")
            assert row["range"] in expected, (name, row["range"])
        else:
            assert row["range"] in ("", "lisa \\| plumbing", "newest \\| next"), name
