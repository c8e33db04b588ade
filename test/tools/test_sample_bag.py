"""The shipped sample bag is what `lisa-ros make-sample-bag` writes, and is usable as promised."""
from pathlib import Path

from lisa_ros.core.image import image_message_to_rgb
from lisa_ros.tools import bag_io
from lisa_ros.tools.cli import main
from lisa_ros.tools.make_sample_bag import GROUND_TRUTH_TOPIC, IMAGE_TOPIC, INSTRUCTION_TOPIC

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "sample_bag"


def messages(path):
    with bag_io.InputBag(path) as bag:
        return {topic: [(t, bytes(bag_io.typestore().serialize_cdr(m, kind))) for t, m in bag.messages(topic)]
                for topic, kind in bag.topics.items()}


def test_shipped_bag_is_reproducible(tmp_path):
    assert main(["make-sample-bag", "--output", str(tmp_path / "bag"), "--reasonseg", str(tmp_path / "rs")]) == 0
    assert messages(tmp_path / "bag") == messages(SHIPPED)
    shipped_json = sorted((SHIPPED.parent / "sample_reasonseg").glob("*.json"))
    assert [p.read_text() for p in shipped_json] == [(tmp_path / "rs" / p.name).read_text() for p in shipped_json]


def test_sample_bag_content():
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) < 3_000_000
    with bag_io.InputBag(SHIPPED) as bag:
        frames = [(bag_io.stamp_ns(m.header), image_message_to_rgb(m).shape) for _, m in bag.messages(IMAGE_TOPIC)]
        truth = {bag_io.stamp_ns(m.header): bag_io.mask_to_array(m) for _, m in bag.messages(GROUND_TRUTH_TOPIC)}
        instructions = [m.data for _, m in bag.messages(INSTRUCTION_TOPIC)]
    assert len(frames) == 12 and {shape for _, shape in frames} == {(480, 640, 3)}
    assert len(instructions) == 10 and "segment what I could drink from" in instructions
    assert set(truth) == {stamp for stamp, _ in frames}  # every frame has its mask, matched by header
    assert all(mask.shape == (480, 640) for mask in truth.values())
    assert sum(not mask.any() for mask in truth.values()) == 1  # "keep me dry in the rain": nothing to find
