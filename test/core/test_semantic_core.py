"""Semantic mode's torch-free half: category lists, description files, label images, options,
and the on-disk description cache."""
from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from lisa_ros.core import semantic as core
from lisa_ros.core.description_cache import DescriptionCache, default_cache_path
from lisa_ros.core.semantic import CategoryError, SemanticOptions, SemanticResult
from lisa_ros.core.types import Status

# -- category lists ---------------------------------------------------------------------------

def test_categories_are_normalised_and_keep_their_order():
    assert core.validate_categories(["  floor", "glass\t door ", "Person"]) == ["floor", "glass door", "Person"]


@pytest.mark.parametrize("names, expected", [
    ([], "empty"),
    ("floor, person", "list of names"),
    (["floor", "  "], "#1 is empty"),
    (["floor", "Floor"], "#1 'Floor' repeats #0"),
    (["glass door", "glass   DOOR"], "repeats #0"),
    (["floor", 3], "#1 is a int"),
    (["a\x00b"], "control"),
    (["x" * (core.MAX_CATEGORY_CHARS + 1)], f"limit {core.MAX_CATEGORY_CHARS}"),
])
def test_bad_category_lists_say_what_is_wrong(names, expected):
    with pytest.raises(CategoryError, match=expected):
        core.validate_categories(names)


def test_ten_thousand_categories_are_refused_before_any_work():
    with pytest.raises(CategoryError, match=r"10000 categories is more than the limit of 1000.*split"):
        core.validate_categories([f"thing {i}" for i in range(10_000)])
    assert len(core.validate_categories([f"thing {i}" for i in range(core.MAX_CATEGORIES)])) == core.MAX_CATEGORIES
    with pytest.raises(CategoryError, match="limit of 5"):
        core.validate_categories(list("abcdef"), max_categories=5)


def test_every_problem_is_named_at_once():
    with pytest.raises(CategoryError) as error:
        core.validate_categories(["", "a", "A", None])
    message = str(error.value)
    assert "#0 is empty" in message and "#2 'A' repeats #1" in message and "#3 is a NoneType" in message


def test_special_token_names_are_accepted_as_plain_text():
    names = core.validate_categories(["[SEG]", "<image>", "</s> door"])
    assert names == ["[SEG]", "<image>", "</s> door"]
    assert core.segment_instruction("[SEG]", "") == "Please segment the [SEG]."


# -- description files ------------------------------------------------------------------------

def test_description_file_is_read_by_normalised_name(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("Glass  Door: 'transparent, rectangular: glass in a metal frame'\nfloor: flat grey tiles\n")
    assert core.load_descriptions(path) == {
        "glass door": "transparent, rectangular: glass in a metal frame", "floor": "flat grey tiles"}
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert core.load_descriptions(empty) == {}


@pytest.mark.parametrize("text, expected", [
    ("floor: [unclosed\n", r"does not parse as YAML at line \d+, column \d+"),
    ("floor: a: b\n", "does not parse as YAML"),
    ("- floor\n- door\n", "holds a YAML list, not a mapping"),
    ("floor: 3\n", "'floor' is a int, not text"),
    ("floor: {colour: grey}\n", "is a dict, not text"),
    ("floor: ''\n", "is empty"),
    ("1: grey\n", "key 1 is not a category name"),
    ("floor: grey\nFloor: brown\n", "described twice"),
    (f"floor: {'x' * (core.MAX_DESCRIPTION_CHARS + 1)}\n", f"limit {core.MAX_DESCRIPTION_CHARS}"),
])
def test_bad_description_files_say_what_is_wrong(tmp_path, text, expected):
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(CategoryError, match=expected):
        core.load_descriptions(path)


def test_missing_binary_or_huge_description_files_are_refused(tmp_path):
    with pytest.raises(CategoryError, match="does not exist"):
        core.load_descriptions(tmp_path / "none.yaml")
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"floor: \xff\xfe\n")
    with pytest.raises(CategoryError, match="not UTF-8"):
        core.load_descriptions(binary)
    huge = tmp_path / "h.yaml"
    huge.write_bytes(b"#" * (core.MAX_DESCRIPTION_FILE_BYTES + 1))
    with pytest.raises(CategoryError, match="limited to"):
        core.load_descriptions(huge)


def test_generated_descriptions_are_tidied():
    assert core.tidy_generated_description("\n  Grey, flat and hard.  It is [SEG] big.\nMore") == "Grey, flat and hard."
    assert core.tidy_generated_description("no full stop") == "no full stop"
    assert core.tidy_generated_description("") == ""
    assert len(core.tidy_generated_description("x" * 1000)) == core.MAX_DESCRIPTION_CHARS


# -- label images ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["Sorry, I can only segment objects in the image.", "I'm sorry, I can't.",
                                  "I\u2019m sorry", "\"I cannot describe that.\"", "i can't see it", "I am sorry",
                                  "As an AI, I have no eyes.", "", "   "])
def test_refusals_and_empty_text_are_no_descriptions(text):
    assert not core.usable_description(text)


@pytest.mark.parametrize("text", ["White, round and glossy.", "Sorrel-brown short hair.", "Asphalt grey, flat.",
                                  "I-shaped steel beam, grey.", "A cannister of tin."])
def test_descriptions_that_only_start_alike_are_kept(text):
    assert core.usable_description(text)


def test_label_image_is_the_argmax_with_unlabelled_below_threshold():
    logits = np.array([
        [[5.0, -1.0, -3.0, 2.0]],   # category id 1
        [[1.0, 3.0, -2.0, 2.0]],    # category id 3 (id 2 was filtered out)
    ])
    label = core.label_image(logits, [1, 3], num_categories=3, threshold=0.0)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, [[1, 3, 0, 1]])  # overlap -> larger logit; tie -> first listed
    np.testing.assert_array_equal(core.label_image(logits, [1, 3], 3, threshold=2.5), [[1, 3, 0, 0]])
    np.testing.assert_allclose(core.label_fractions(label, 3), [0.5, 0.0, 0.25])


def test_overlaps_do_not_depend_on_the_order_of_the_categories():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 16, 16))
    label = core.label_image(logits, [1, 2, 3, 4], 4)
    order = [2, 0, 3, 1]
    np.testing.assert_array_equal(core.label_image(logits[order], [o + 1 for o in order], 4), label)


def test_label_argmax_over_chunks_equals_one_pass_ties_included():
    rng = np.random.default_rng(2)
    logits = rng.integers(-3, 4, size=(7, 9, 11)).astype(np.float32)  # small integers: many ties
    ids = [1, 2, 4, 5, 6, 8, 9]
    argmax = core.LabelArgmax((9, 11), 9, threshold=1.0)
    for rows in (slice(0, 3), slice(3, 4), slice(4, 7)):
        argmax.add(logits[rows], ids[rows])
    np.testing.assert_array_equal(argmax.label(), core.label_image(logits, ids, 9, threshold=1.0))
    with pytest.raises(ValueError, match=r"logits must be \(N, 9, 11\)"):
        argmax.add(np.zeros((1, 9, 10)), [1])


def test_label_dtype_is_mono8_up_to_255_then_uint16():
    assert core.label_dtype(255) == np.uint8 and core.label_dtype(256) == np.uint16
    logits = np.full((1, 2, 2), -5.0)
    logits[0, 0, 0] = 1.0
    label = core.label_image(logits, [300], num_categories=300)
    assert label.dtype == np.uint16 and label[0, 0] == 300 and label.sum() == 300
    assert core.label_image(np.zeros((0, 3, 5)), [], 2).shape == (3, 5)
    with pytest.raises(ValueError, match="label ids must be in 1..2"):
        core.label_image(logits, [3], 2)


def test_label_overlay_colours_labelled_pixels_only():
    image = np.full((2, 2, 3), 100, np.uint8)
    label = np.array([[0, 1], [2, 0]], np.uint8)
    out = core.label_overlay(image, label, alpha=1.0)
    np.testing.assert_array_equal(out[0, 0], image[0, 0])
    np.testing.assert_array_equal(out[0, 1], core.PALETTE[0])
    np.testing.assert_array_equal(out[1, 0], core.PALETTE[1])


def test_failure_result_keeps_the_label_map():
    result = SemanticResult.failure(Status.INVALID_INSTRUCTION, "bad", ["floor", "door"], (4, 6), "m")
    assert result.label.shape == (4, 6) and not result.label.any()
    assert result.label_ids == [1, 2] and result.label_names == ["floor", "door"] and result.present == []
    assert math.isnan(result.presence[0]) and result.status == Status.INVALID_INSTRUCTION


# -- options ---------------------------------------------------------------------------------

def test_options_from_parameters():
    options = SemanticOptions.from_mapping({"categories": [" floor", "person"], "filter_threshold": 0,
                                            "label_threshold": -1})
    assert options.categories == ("floor", "person") and options.filter_threshold == 0.0
    with pytest.raises(CategoryError, match="filter_threshold must be in"):
        SemanticOptions.from_mapping({"filter_threshold": 1.5})
    with pytest.raises(CategoryError, match="unknown semantic option"):
        SemanticOptions.from_mapping({"threshold": 0.5})
    with pytest.raises(CategoryError, match="max_batch_tokens must be int"):
        SemanticOptions.from_mapping({"max_batch_tokens": "many"})
    with pytest.raises(CategoryError, match="repeats"):
        SemanticOptions.from_mapping({"categories": ["a", "A"]})


# -- description cache -------------------------------------------------------------------------

def test_cache_round_trip_keyed_by_model_version_and_category(tmp_path):
    path = tmp_path / "sub" / "descriptions.json"
    DescriptionCache(path).put_many("lisa-7b", "v1", {"Glass Door": "clear glass"})
    fresh = DescriptionCache(path)
    assert fresh.get("lisa-7b", "v1", "glass  door") == "clear glass"
    assert fresh.get("lisa-13b", "v1", "glass door") is None
    assert fresh.get("lisa-7b", "v2", "glass door") is None
    assert [p.name for p in path.parent.iterdir()] == ["descriptions.json"]  # no temporary file left


def test_cache_writers_merge_instead_of_overwriting(tmp_path):
    path = tmp_path / "d.json"
    first, second = DescriptionCache(path), DescriptionCache(path)
    first.get("m", "v", "x")
    second.put_many("m", "v", {"door": "wooden"})
    first.put_many("m", "v", {"floor": "tiles"})
    assert DescriptionCache(path).get("m", "v", "door") == "wooden"
    assert DescriptionCache(path).get("m", "v", "floor") == "tiles"


@pytest.mark.parametrize("content", [b'{"format": "lisa_ros-descriptions-1", "entries": {"k": 3}}', b"{trunc", b"[]",
                                     b'{"format": "lisa_ros-descriptions-1", "entries": {"k": "\xff\xfe"}}',
                                     b"\x89PNG\r\n\x1a\n\x00\x00", b"[" * 100_000])
def test_an_unreadable_or_corrupted_cache_is_moved_aside_and_restarted(tmp_path, caplog, content):
    """Wrong shape, bad JSON, not UTF-8 (latin-1 edit, a binary file in its place) or nested past the parser:
    never an exception, nothing lost."""
    path = tmp_path / "d.json"
    path.write_bytes(content)
    cache = DescriptionCache(path)
    with caplog.at_level(logging.WARNING):
        assert cache.get("m", "v", "floor") is None
    assert "unreadable or corrupted" in caplog.text
    aside = list(tmp_path.glob("d.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    cache.put_many("m", "v", {"floor": "tiles"})
    assert json.loads(path.read_text())["format"] == "lisa_ros-descriptions-1"
    assert DescriptionCache(path).get("m", "v", "floor") == "tiles"


def test_a_cache_the_os_refuses_to_read_is_moved_aside_and_restarted(tmp_path, caplog):
    """An OSError on read (here a link loop: EACCES cannot be made as root) is handled like corruption."""
    path = tmp_path / "d.json"
    path.symlink_to(path)
    cache = DescriptionCache(path)
    with caplog.at_level(logging.WARNING):
        assert cache.get("m", "v", "floor") is None
    assert "unreadable or corrupted" in caplog.text and len(list(tmp_path.glob("d.json.corrupt-*"))) == 1
    cache.put_many("m", "v", {"floor": "tiles"})
    assert DescriptionCache(path).get("m", "v", "floor") == "tiles"


def test_unwritable_cache_logs_and_keeps_the_run_going(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = DescriptionCache(blocker / "d.json")  # its folder would be a file
    with caplog.at_level(logging.WARNING):
        cache.put_many("m", "v", {"floor": "tiles"})
    assert "not written" in caplog.text and cache.get("m", "v", "floor") == "tiles"


def test_default_cache_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / "lisa_ros" / "descriptions.json"
