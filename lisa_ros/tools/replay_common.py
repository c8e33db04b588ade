"""What ``lisa-ros replay`` and its semantic mode share: which bag topic is the camera, the node's image topic,
the exit codes and the status of a request that got no answer.

Its own module so that replay.py (which hands ``--semantic`` to semantic_replay.py) and
semantic_replay.py import it, not each other.
"""
from __future__ import annotations

from lisa_ros.tools import bag_io, depth_replay
from lisa_ros.tools.bag_io import BagError

GROUND_TRUTH_PREFIX = "/ground_truth/"
NO_RESULT = "NO_RESULT"
EXIT_FAILURES, EXIT_BAD_INPUT, EXIT_NO_NODE, EXIT_INTERRUPTED = 1, 2, 3, 130


def resolve_image_topic(bag: bag_io.InputBag, wanted: str | None) -> tuple[str, str]:
    """The bag's camera topic and its type: ``wanted``, or the only image topic; BagError lists the choices."""
    if wanted:
        return wanted, bag.require_topic(wanted, bag_io.IMAGE_TYPES)
    candidates = [t for t, kind in bag.topics.items()
                  if kind in bag_io.IMAGE_TYPES and not t.startswith(GROUND_TRUTH_PREFIX)]
    # A depth stream beside the colour one goes to the node's depth input (depth_replay), not its image.
    candidates = [t for t in candidates if not depth_replay.is_depth_image(t, bag.topics[t])] or candidates
    if len(candidates) != 1:
        listing = ", ".join(f"{t} [{k}]" for t, k in sorted(bag.topics.items())) or "none"
        raise BagError(f"bag {bag.path}: {'several' if candidates else 'no'} image topics; pass --image-topic "
                       f"(topics: {listing})")
    return candidates[0], bag.require_topic(candidates[0], bag_io.IMAGE_TYPES)


def node_image_topic(bag_topic: str, image_type: str) -> str:
    """The topic the node's ``image`` is remapped to: the bag's, without image_transport's /compressed."""
    if image_type == bag_io.COMPRESSED_IMAGE and bag_topic.endswith("/compressed"):
        return bag_topic[: -len("/compressed")]
    return bag_topic
