"""The engine factory refuses unknown engine types with a message naming them."""
import pytest

from lisa_ros.core.engine import create_engine


def test_unknown_engine_type_is_named():
    with pytest.raises(ValueError, match="'yolo'"):
        create_engine("yolo", {})
