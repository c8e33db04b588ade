"""rosbag2 reading and writing for the tools, built on the ``rosbags`` library.

No ROS install is needed here: ``lisa-ros eval`` and ``make-sample-bag`` use this
module alone. Every problem with an input bag surfaces as a ``BagError`` whose
message names the bag, the topic and what is wrong, because users replay bags
recorded elsewhere and need to know what to fix.
"""
from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import apsw
import cv2
import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import CompressionFormat, CompressionMode, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore

from lisa_ros.core.image import image_message_to_rgb
from lisa_ros.core.masks import png_to_mask

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
RESULT = "lisa_ros/msg/SegmentationResult"
INSTRUCTION = "lisa_ros/msg/Instruction"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)

# rosbags reads sqlite3 bags through apsw: a .db3 cut short can open and fail later with apsw.IOError.
_BAG_FAILURES = (AnyReaderError, ReaderError, TypesysError, sqlite3.DatabaseError, apsw.Error, OSError, ValueError,
                 EOFError)
# What rosbags opens besides a rosbag2 directory: one storage file alone (Foxglove and the mcap CLI write these).
BAG_FILE_SUFFIXES = (".mcap", ".db3")
_MCAP_MAGIC = b"\x89MCAP0\r\n"


class BagError(RuntimeError):
    """An input bag cannot be used; the message says which bag and why."""


def _interface_files() -> list[Path]:
    """SegmentationResult.msg from the installed package, else from this source tree."""
    prefixes = os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    candidates = [Path(p) / "share" / "lisa_ros" / "msg" for p in prefixes if p]
    candidates.append(Path(__file__).resolve().parents[2] / "msg")
    for folder in candidates:
        if (folder / "SegmentationResult.msg").is_file():
            return sorted(folder.glob("*.msg"))
    raise FileNotFoundError("lisa_ros/msg/SegmentationResult.msg not found (source scripts/ros_env.sh)")


@functools.cache
def typestore():
    """The Jazzy typestore plus this package's messages (for writing bags and decoding)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for path in _interface_files():
        types.update(get_types_from_msg(path.read_text(), f"lisa_ros/msg/{path.stem}"))
    store.register(types)
    return store


def storage_of(name: str) -> StoragePlugin:
    try:
        return StoragePlugin[name.upper()]
    except KeyError:
        raise ValueError(f"unknown rosbag2 storage {name!r}; expected sqlite3 or mcap") from None


# --------------------------------------------------------------------------- images


def mask_to_array(msg) -> np.ndarray:
    """A mask image (mono8 0/255, raw or PNG) as a bool (H, W) array."""
    return image_message_to_rgb(msg)[:, :, 0] > 0


def result_masks(result) -> list[np.ndarray]:
    """A SegmentationResult's masks as bool (H, W) arrays, whichever its mask_encoding: "raw" (masks[], mono8
    Image) or "png" (compressed_masks[], PNG CompressedImage)."""
    if result.mask_encoding == "png":
        return [png_to_mask(m.data) for m in result.compressed_masks]
    if result.mask_encoding not in ("raw", ""):
        raise ValueError(f"unknown SegmentationResult.mask_encoding {result.mask_encoding!r}")
    return [mask_to_array(m) for m in result.masks]


def header(stamp_ns: int, frame_id: str):
    store = typestore()
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)


def stamp_ns(msg_header) -> int:
    return msg_header.stamp.sec * 10**9 + msg_header.stamp.nanosec


def raw_image_msg(array: np.ndarray, msg_header):
    """A sensor_msgs/Image (rgb8 or mono8) holding ``array``."""
    array = np.ascontiguousarray(array, np.uint8)
    mono = array.ndim == 2
    height, width = array.shape[:2]
    return typestore().types[IMAGE](
        header=msg_header, height=height, width=width, encoding="mono8" if mono else "rgb8",
        is_bigendian=0, step=width * (1 if mono else 3), data=array.reshape(-1),
    )


def compressed_image_msg(array: np.ndarray, msg_header, fmt: str):
    """A sensor_msgs/CompressedImage: ``fmt`` "jpeg" for photos, "png" for masks (lossless)."""
    bgr = array if array.ndim == 2 else cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    options = [cv2.IMWRITE_JPEG_QUALITY, 90] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else fmt}", bgr, options)
    assert ok, fmt
    # image_transport's format: "<source encoding>; <codec> compressed <encoding inside the file>"
    source, inside = ("mono8", "mono8") if array.ndim == 2 else ("rgb8", "bgr8")
    return typestore().types[COMPRESSED_IMAGE](header=msg_header, format=f"{source}; {fmt} compressed {inside}",
                                               data=encoded.reshape(-1))


# --------------------------------------------------------------------------- reading


class InputBag:
    """A rosbag2 (a directory, or one bare .mcap / .db3 file) opened for reading, with checked topics.

    Use as a context manager. ``messages(topic)`` yields (bag time ns, message)
    deserialized, in bag time order.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            data_files = sorted(p.name for p in self.path.iterdir() if p.suffix in BAG_FILE_SUFFIXES)
            hint = f"; to read one of its files alone pass it: {', '.join(data_files)}" if data_files else ""
            raise BagError(f"{self.path} is not a rosbag2 directory (no metadata.yaml); pass the bag's folder{hint}")
        if not self.path.is_dir() and self.path.suffix not in BAG_FILE_SUFFIXES:
            raise BagError(f"{self.path} is not a rosbag2: pass the bag's folder, or a bare .mcap or .db3 file")
        try:
            self._reader = AnyReader([self.path], default_typestore=typestore())
            self._reader.open()
        except _BAG_FAILURES as err:
            raise BagError(f"bag {self.path} cannot be opened (truncated or corrupt?): {err}"
                           f"{self._cut_hint()}") from None

    def _cut_hint(self) -> str:
        """The fix for an MCAP file that ends before its footer (a recorder killed mid-write)."""
        files = [self.path] if self.path.is_file() else sorted(self.path.glob("*.mcap"))
        for data_file in files:
            if data_file.suffix != ".mcap" or data_file.stat().st_size < 2 * len(_MCAP_MAGIC):
                continue
            with data_file.open("rb") as handle:
                starts_well = handle.read(len(_MCAP_MAGIC)) == _MCAP_MAGIC
                handle.seek(-len(_MCAP_MAGIC), os.SEEK_END)
                if starts_well and handle.read() != _MCAP_MAGIC:
                    recovered = data_file.with_name(f"{data_file.stem}-recovered.mcap")
                    return (f". {data_file} is cut off at its end (no footer: the recording did not finish); "
                            f"rebuild it with the mcap CLI: mcap recover {data_file} -o {recovered}")
        return ""

    def __enter__(self) -> InputBag:
        return self

    def __exit__(self, *exc) -> None:
        self._reader.close()

    @property
    def topics(self) -> dict[str, str]:
        """topic name -> message type."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    def require_topic(self, topic: str, allowed_types: tuple[str, ...]) -> str:
        """The topic's message type; BagError if the topic is missing or of another type."""
        topics = self.topics
        if topic not in topics:
            listing = ", ".join(f"{name} [{kind}]" for name, kind in sorted(topics.items())) or "none"
            raise BagError(f"bag {self.path} has no topic {topic!r}; its topics: {listing}")
        if topics[topic] not in allowed_types:
            raise BagError(f"topic {topic!r} in bag {self.path} has message type {topics[topic]!r}; "
                           f"expected {' or '.join(allowed_types)}")
        if topics[topic] not in self._reader.typestore.types:
            raise BagError(f"bag {self.path} has no definition of message type {topics[topic]!r} used by {topic!r}")
        return topics[topic]

    def messages(self, topic: str) -> Iterator[tuple[int, object]]:
        connections = [c for c in self._reader.connections if c.topic == topic]
        try:
            for connection, timestamp, raw in self._reader.messages(connections=connections):
                yield timestamp, self._reader.deserialize(raw, connection.msgtype)
        except _BAG_FAILURES as err:
            raise BagError(f"bag {self.path} cannot be read on {topic!r} (truncated or corrupt?): {err}"
                           f"{self._cut_hint()}") from None


# --------------------------------------------------------------------------- writing


class OutputBag:
    """A rosbag2 being recorded; serialized messages go in as they come.

    MCAP by default (rosbag2's default storage since Iron) with zstd-compressed chunks: masks,
    overlays and raw frames shrink several times, and every MCAP reader decompresses chunks.
    sqlite3 on request, uncompressed like rosbag2's sqlite3 default.

    rosbags writes the MCAP index and summary (sqlite3: commits) and metadata.yaml only on
    close, so ``close()`` must run on every exit path (the replay calls it from ``finally``,
    Ctrl-C included); then the bag is complete and readable.
    """

    def __init__(self, path: str | os.PathLike, storage: str = "mcap"):
        self.path = Path(path)
        plugin = storage_of(storage)
        try:
            self._writer = Writer(self.path, version=9, storage_plugin=plugin)
            if plugin is StoragePlugin.MCAP:
                self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
            self._writer.open()
        except WriterError as err:
            raise BagError(f"cannot record into {self.path}: {err}") from None
        self._connections: dict[str, object] = {}

    def add_topic(self, topic: str, msgtype: str) -> None:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore())

    def write_raw(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        self._writer.write(self._connections[topic], timestamp_ns, data)

    def write(self, topic: str, timestamp_ns: int, msg, msgtype: str) -> None:
        self.add_topic(topic, msgtype)
        self.write_raw(topic, timestamp_ns, bytes(typestore().serialize_cdr(msg, msgtype)))

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> OutputBag:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
