"""model.adapter through the node over DDS: results and /diagnostics say which adapter answered; a broken adapter
fails configure with the reason."""
import pytest

from conftest import REPO, make_image_msg, wait_for

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def tiny_adapter(tiny_lisa_checkpoint, tmp_path_factory):
    pytest.importorskip("peft")
    from adapter_factory import write_test_adapter

    return write_test_adapter(tiny_lisa_checkpoint, tmp_path_factory.mktemp("node_adapter") / "shelf-parts")


def test_results_and_diagnostics_name_the_adapter(lisa_io, tiny_lisa_checkpoint, tiny_adapter):
    from lisa_ros.model.adapter import read_adapter

    io = lisa_io(params_file=REPO / "config" / "lisa_cpu.yaml", start_timeout=180,
                 params={"model.path": str(tiny_lisa_checkpoint), "model.adapter": str(tiny_adapter),
                         "diagnostics_period": 0.2})
    io.publish_frame(make_image_msg(width=64, height=48, stamp=(5, 0), frame_id="cam"))
    io.ask("Please segment the cup.")
    result = io.results_for("Please segment the cup.", timeout=120)[0]
    assert result.status in (result.STATUS_OK, result.STATUS_NOT_FOUND), result.status_message
    assert result.model_id == "lisa-tiny-7b+shelf-parts"
    values = io.diagnostics()
    assert values["model_id"] == "lisa-tiny-7b+shelf-parts" and values["adapter"] == "shelf-parts"
    assert values["adapter_identity"] == read_adapter(tiny_adapter).identity


def test_a_broken_adapter_fails_configure_naming_it(lisa_node_process, ros_probe, tiny_lisa_checkpoint, tmp_path):
    missing = tmp_path / "no-such-adapter"
    node = lisa_node_process(params_file=REPO / "config" / "lisa_cpu.yaml", wait_active=False,
                             params={"model.path": str(tiny_lisa_checkpoint), "model.adapter": str(missing)})
    node.wait_for_state(ros_probe, "unconfigured", timeout=120)
    line = wait_for(lambda: [x for x in node.log.splitlines() if "[ERROR]" in x and "configure failed" in x], 30,
                    "the error line")[0]
    assert f"option 'adapter': adapter directory {missing} does not exist" in line
    assert "lisa-ros finetune" in line
