"""The semantic mode's interfaces as colcon builds them: status constants shared with
SegmentationResult and lisa_ros.core.types.Status, and the fields the node glue fills."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from std_msgs.msg import Header

from lisa_ros.core.types import Status
from lisa_ros.msg import SegmentationResult, SemanticSegmentation
from lisa_ros.node.semantic_glue import label_image_msg
from lisa_ros.srv import SegmentSemantic

REPO = Path(__file__).resolve().parents[2]


def test_status_constants_match_segmentation_result_and_core():
    for status in Status:
        assert getattr(SemanticSegmentation, f"STATUS_{status.name}") == status.value
        assert getattr(SegmentationResult, f"STATUS_{status.name}") == status.value


def test_message_and_service_fields():
    fields = SemanticSegmentation.get_fields_and_field_types()
    assert fields["label"] == "sensor_msgs/Image" and fields["label_ids"] == "sequence<uint16>"
    for name in ("label_names", "scores", "presence", "pixel_fractions", "filtered_out", "filtered_reasons",
                 "descriptions", "description_sources", "timing_names", "timing_ms", "status_message", "request_id"):
        assert name in fields
    request = SegmentSemantic.Request()
    assert request.image.width == 0 and list(request.categories) == []
    response = SegmentSemantic.Response()
    assert isinstance(response.result, SemanticSegmentation)
    message = SemanticSegmentation(label_ids=np.arange(1, 1001, dtype=np.uint16).tolist())
    assert len(message.label_ids) == 1000  # the 16UC1 range holds the category cap


def _documented_mask_snippets() -> list[str]:
    """The per-category mask example, as docs/semantic.md and the message's comments give it."""
    readme = (REPO / "docs" / "semantic.md").read_text().split("**Per-category masks and scores.**", 1)[1]
    comments = (REPO / "msg" / "SemanticSegmentation.msg").read_text().split("one category's boolean mask:", 1)[1]
    return [readme.split("```python\n", 1)[1].split("```", 1)[0],
            "\n".join(line.removeprefix("#").strip() for line in comments.splitlines()[1:3])]


@pytest.mark.parametrize("count", [3, 300])  # mono8 and 16UC1
def test_the_documented_per_category_mask_is_the_label_images_pixels_of_that_id(count):
    label = (np.arange(35).reshape(5, 7) % 4).astype(np.uint8 if count <= 255 else np.uint16)
    msg = SemanticSegmentation(label=label_image_msg(label, Header()), label_ids=list(range(1, count + 1)),
                               label_names=["floor", "person"] + [f"class {i}" for i in range(count - 2)])
    for snippet in _documented_mask_snippets():
        scope = {"np": np, "msg": msg}
        exec(snippet, scope)
        assert scope["person"].dtype == bool and np.array_equal(scope["person"], label == 2), snippet
