"""The training set's own checks: a sample's files are refused, named, before anything large is allocated."""
import json
import struct
import zlib

import cv2
import numpy as np
import pytest

from lisa_ros.training.dataset import FORMAT, DatasetError, load_split


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and which holds no pixels: decoding it would allocate them."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def one_sample_set(root, image_bytes: bytes):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "a.png").write_bytes(image_bytes)
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 255
    cv2.imwrite(str(root / "masks" / "a_0.png"), mask)
    (root / "dataset.json").write_text(json.dumps({"format": FORMAT}))
    record = {"id": "shelf/a", "image": "images/a.png", "instruction": "the red cup", "masks": ["masks/a_0.png"]}
    (root / "train.jsonl").write_text(json.dumps(record) + "\n")
    return load_split(root, "train")[0]


def test_a_huge_image_header_is_refused_before_decoding(tmp_path):
    sample = one_sample_set(tmp_path, png_header_only(9000, 9000))
    with pytest.raises(DatasetError, match=r"sample 'shelf/a': .*a.png is 9000x9000, larger than"):
        sample.load()


def test_an_unreadable_image_is_refused_naming_the_sample(tmp_path):
    sample = one_sample_set(tmp_path, b"not an image")
    with pytest.raises(DatasetError, match=r"sample 'shelf/a': .*a.png is not a readable image"):
        sample.load()


def test_a_good_sample_loads_its_image_and_mask(tmp_path):
    image = np.full((4, 4, 3), (10, 20, 30), np.uint8)  # RGB
    sample = one_sample_set(tmp_path, cv2.imencode(".png", image[..., ::-1])[1].tobytes())
    rgb, masks = sample.load()
    assert rgb.shape == (4, 4, 3) and tuple(rgb[0, 0]) == (10, 20, 30)
    assert masks.shape == (1, 4, 4) and masks.sum() == 4
