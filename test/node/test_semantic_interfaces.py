"""The semantic mode's interfaces as colcon builds them: status constants shared with
SegmentationResult and lisa_ros.core.types.Status, and the fields the node glue fills."""
from __future__ import annotations

import numpy as np

from lisa_ros.core.types import Status
from lisa_ros.msg import SegmentationResult, SemanticSegmentation
from lisa_ros.srv import SegmentSemantic


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
