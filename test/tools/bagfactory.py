"""Writes small rosbag2 test bags with the rosbags library, and reads what their MCAP chunks say (no ROS needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.rosbag2.storage_mcap import McapReader

from lisa_ros.tools import bag_io

START_NS = 1_600_000_000 * 10**9
PERIOD_NS = 200_000_000


def frame(index: int, width: int = 160, height: int = 120) -> np.ndarray:
    """A deterministic RGB frame that differs per index."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x + 7 * index) % 256, (y * 2) % 256, np.full_like(x, 40 * index % 256)], -1).astype(np.uint8)


def write_bag(path: Path, frames: int = 4, instructions: dict[int, str] | None = None, *, storage: str = "sqlite3",
              compressed: bool = False, image_topic: str = "/camera/image", size=(160, 120),
              ground_truth: dict[int, np.ndarray] | None = None, frame_id: str = "cam",
              stamps: list[int] | None = None, depth_mm: int | None = None) -> list[int]:
    """Frames every 200 ms (bag time); instructions[i] is sent 10 ms after frame i. Returns the header stamps (ns).

    ``stamps``: the frames' header stamps (default: their bag times), e.g. equal ones for a frozen clock.
    ``depth_mm``: also a flat 16UC1 depth image at that distance on /camera/depth/image_raw and its
    pinhole CameraInfo on /camera/depth/camera_info, with each frame's header (aligned depth).
    """
    times = [START_NS + i * PERIOD_NS for i in range(frames)]
    stamps = stamps or times
    with bag_io.OutputBag(path, storage) as bag:
        for i, (time_ns, stamp) in enumerate(zip(times, stamps, strict=True)):
            header = bag_io.header(stamp, frame_id)
            image = frame(i, *size)
            if compressed:
                msg = bag_io.compressed_image_msg(image, header, "png")
                bag.write(image_topic, time_ns, msg, bag_io.COMPRESSED_IMAGE)
            else:
                bag.write(image_topic, time_ns, bag_io.raw_image_msg(image, header), bag_io.IMAGE)
            if depth_mm is not None:
                write_depth(bag, time_ns, header, size, depth_mm)
            if instructions and i in instructions:
                msg = bag_io.typestore().types[bag_io.STRING](data=instructions[i])
                bag.write("/instruction", time_ns + 10_000_000, msg, bag_io.STRING)
            if ground_truth and i in ground_truth:
                mask = bag_io.raw_image_msg(ground_truth[i].astype(np.uint8) * 255, header)
                bag.write("/ground_truth/mask", time_ns, mask, bag_io.IMAGE)
    return stamps


def chunk_compressions(mcap_file: Path) -> set[str]:
    """The compression named by each chunk of an MCAP file ("" = none)."""
    reader = McapReader(mcap_file)
    reader.open()
    try:
        return {chunk.compression for chunk in reader.chunks}
    finally:
        reader.close()


def camera_info_msg(header, size):
    """A pinhole CameraInfo for a (width, height) frame: fx = fy = width, centred principal point."""
    width, height = size
    types = bag_io.typestore().types
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    k = np.array([width, 0, width / 2, 0, width, height / 2, 0, 0, 1], np.float64)
    p = np.array([width, 0, width / 2, 0, 0, width, height / 2, 0, 0, 0, 1, 0], np.float64)
    return types["sensor_msgs/msg/CameraInfo"](
        header=header, height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5), k=k,
        r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0, roi=roi)


def write_depth(bag, time_ns: int, header, size, depth_mm: int) -> None:
    width, height = size
    depth = np.full((height, width), depth_mm, "<u2")
    msg = bag_io.typestore().types[bag_io.IMAGE](
        header=header, height=height, width=width, encoding="16UC1", is_bigendian=0, step=width * 2,
        data=depth.view(np.uint8).reshape(-1))
    bag.write("/camera/depth/image_raw", time_ns, msg, bag_io.IMAGE)
    bag.write("/camera/depth/camera_info", time_ns, camera_info_msg(header, size), "sensor_msgs/msg/CameraInfo")
