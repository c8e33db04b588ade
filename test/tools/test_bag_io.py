"""Output bags: MCAP with zstd-compressed chunks by default, sqlite3 on request; both read back as written."""
import numpy as np
import pytest
import yaml

from bagfactory import chunk_compressions, frame
from lisa_ros.core.image import image_message_to_rgb
from lisa_ros.tools import bag_io


@pytest.mark.parametrize("storage", [None, "mcap", "sqlite3"], ids=["default", "mcap", "sqlite3"])
def test_written_bag_reads_back_with_its_storage_in_the_metadata(tmp_path, storage):
    frames = [frame(i, 320, 240) for i in range(4)]
    with bag_io.OutputBag(tmp_path / "bag", *([storage] if storage else [])) as bag:
        for index, pixels in enumerate(frames):
            bag.write("/camera/image", index, bag_io.raw_image_msg(pixels, bag_io.header(index, "cam")), bag_io.IMAGE)
    metadata = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["storage_identifier"] == (storage or "mcap") and metadata["message_count"] == 4
    with bag_io.InputBag(tmp_path / "bag") as bag:
        read = [image_message_to_rgb(msg) for _, msg in bag.messages("/camera/image")]
    assert all(np.array_equal(a, b) for a, b in zip(read, frames, strict=True))


def test_mcap_chunks_are_zstd_compressed_and_sqlite3_is_left_plain(tmp_path):
    raw_bytes = 0
    for storage in ("mcap", "sqlite3"):
        with bag_io.OutputBag(tmp_path / storage, storage) as bag:
            for index in range(4):
                msg = bag_io.raw_image_msg(np.zeros((240, 320, 3), np.uint8), bag_io.header(index, "cam"))
                raw_bytes += len(msg.data) if storage == "mcap" else 0
                bag.write("/camera/image", index, msg, bag_io.IMAGE)
    (mcap_file,) = (tmp_path / "mcap").glob("*.mcap")
    assert chunk_compressions(mcap_file) == {"zstd"}
    assert mcap_file.stat().st_size < raw_bytes / 10  # really compressed (blank frames)
    metadata = yaml.safe_load((tmp_path / "sqlite3" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert (metadata["compression_mode"], metadata["compression_format"]) == ("", "")
    (db3_file,) = (tmp_path / "sqlite3").glob("*.db3")
    assert db3_file.stat().st_size > raw_bytes
