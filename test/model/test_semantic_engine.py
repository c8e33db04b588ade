"""Semantic mode on the tiny checkpoint: the packed passes equal one prompt at a time, the filter,
descriptions (user file, disk cache, the LLM), the label image and bad input.

The tiny model's masks and answers are meaningless; these tests check the arithmetic
and the plumbing of the method, not its quality.
"""
from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicCache

from lisa_ros.core import semantic as core
from lisa_ros.core.description_cache import DescriptionCache
from lisa_ros.core.semantic import CategoryError, SemanticOptions
from lisa_ros.core.types import Status
from lisa_ros.model import semantic
from lisa_ros.model.checkpoint import checkpoint_identity
from lisa_ros.model.generation import GenerationCancelled, generate
from lisa_ros.model.tiny import write_tiny_checkpoint
from lisa_ros.model.tokenization import build_prompt_ids

CATEGORIES = ["cup", "dog", "glass door", "table", "[SEG] <image>", "bottle"]


def _options(tmp_path, **values):
    return SemanticOptions(description_cache=str(tmp_path / "descriptions.json"), **values)


@pytest.fixture(scope="module")
def engine_13b(make_engine, tiny_13b):
    """The untrained 13B-layout checkpoint: its LLM writes text that is no refusal (the trained 7B one
    answers every description prompt "Sorry, I can only segment objects in the image.")."""
    engine = make_engine(tiny_13b.lisa_dir)
    yield engine
    engine.unload()


def test_seg_states_of_the_packed_pass_equal_one_prompt_at_a_time(engine, frame):
    """Every category's [SEG] state, packed in one pass or in several chunks, is what ``generate``
    gives for that prompt alone with the forced answer."""
    model, tokenizer = engine.model, engine.tokenizer
    encoded = engine.frame_cache.encode(frame, "packed", {})
    instructions = [core.segment_instruction(c, "small and round") for c in CATEGORIES]
    packed = semantic.seg_hidden_states(engine, encoded, instructions, max_batch_tokens=4096)
    chunked = semantic.seg_hidden_states(engine, encoded, instructions, max_batch_tokens=64)
    forced = tokenizer.encode_with_added_tokens(core.FORCED_ANSWER) + [tokenizer.eos_id]
    for index, instruction in enumerate(instructions):
        alone = generate(model, build_prompt_ids(tokenizer, instruction), encoded.clip_features,
                         eos_id=tokenizer.eos_id, seg_id=tokenizer.seg_id, max_new_tokens=8, forced_ids=forced)
        assert alone.seg_hidden.shape[0] == 1
        torch.testing.assert_close(packed[index].float(), alone.seg_hidden[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(chunked[index].float(), alone.seg_hidden[0], atol=1e-4, rtol=1e-4)


def test_batched_masks_equal_separate_segment_requests(engine, frame, tmp_path):
    """The batched request's masks and scores are those of N single-instruction engine.segment calls."""
    segmenter = semantic.SemanticSegmenter(engine, _options(tmp_path, filter_threshold=0.0,
                                                            generate_descriptions=False))
    result = segmenter.segment(frame, CATEGORIES, frame_key="same")
    encoded = engine.frame_cache.encode(frame, "same", {})
    hidden = semantic.seg_hidden_states(engine, encoded, [core.segment_instruction(c, "") for c in CATEGORIES],
                                        max_batch_tokens=2048)
    masks = semantic.decode_category_masks(engine, encoded, hidden, frame.shape[:2], {})
    assert masks.logits.shape == (len(CATEGORIES), *frame.shape[:2]) and masks.logits.dtype == np.float32
    for index, category in enumerate(CATEGORIES):
        alone = engine.segment(frame, core.segment_instruction(category, ""), frame_key="same",
                               conversation_id=f"alone-{index}", force_answer=core.FORCED_ANSWER)
        assert len(alone.masks) == 1
        assert (alone.masks[0] == (masks.logits[index] > 0)).mean() > 0.9999
        assert result.scores[index] == pytest.approx(alone.scores[0], abs=1e-4)
    np.testing.assert_array_equal(result.label, core.label_image(masks.logits, range(1, 7), 6))
    assert result.status == Status.OK and result.label.dtype == np.uint8 and result.label.shape == frame.shape[:2]
    assert sum(result.fractions) == pytest.approx(np.count_nonzero(result.label) / result.label.size)
    assert result.label_ids == [1, 2, 3, 4, 5, 6] and result.label_names == CATEGORIES
    assert result.filtered_out == [] and all(np.isnan(result.presence))
    for phase in ("describe", "clip", "prefix", "segment", "sam_encoder", "mask_decode", "label", "total"):
        assert phase in result.timings_ms


def test_presence_of_the_packed_pass_equals_each_question_alone(engine, frame):
    model, tokenizer = engine.model, engine.tokenizer
    encoded = engine.frame_cache.encode(frame, "filter", {})
    probabilities = semantic.presence_probabilities(engine, encoded, CATEGORIES, max_batch_tokens=64)
    shared, yes_id, no_id = semantic.answer_choice_ids(tokenizer)
    for index, category in enumerate(CATEGORIES):
        prompt = build_prompt_ids(tokenizer, core.PRESENCE_QUESTION.format(category=category)) + shared
        with torch.inference_mode():
            hidden = model.decoder_hidden(model.embed(prompt, encoded.clip_features), DynamicCache(
                config=model.llm.config))[0, -1]
            logits = model.next_token_logits(hidden)
        expected = torch.sigmoid(logits[yes_id] - logits[no_id]).item()
        assert probabilities[index] == pytest.approx(expected, abs=1e-5)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_filter_is_monotone_in_its_threshold_and_reports_why(engine, frame, tmp_path):
    kept_before = None
    presence = None
    for threshold in (0.01, 0.3, 0.5, 0.54, 0.6, 0.99):
        segmenter = semantic.SemanticSegmenter(engine, _options(
            tmp_path, filter_threshold=threshold, generate_descriptions=False))
        result = segmenter.segment(frame, CATEGORIES, frame_key="monotone")
        kept = set(CATEGORIES) - set(result.filtered_out)
        if presence is not None:
            np.testing.assert_allclose(result.presence, presence, atol=1e-6)  # same question, same answer
        presence = result.presence
        assert kept == {c for c, p in zip(CATEGORIES, presence) if p >= threshold}
        if kept_before is not None:
            assert kept <= kept_before
        kept_before = kept
        assert len(result.filtered_reasons) == len(result.filtered_out)
        assert all(f"< filter_threshold {threshold}" in reason for reason in result.filtered_reasons)
        for name, fraction, score in zip(CATEGORIES, result.fractions, result.scores):
            if name not in kept:
                assert fraction == 0.0 and score == 0.0


def test_all_filtered_out_is_not_found_without_running_sam(engine, frame, tmp_path):
    segmenter = semantic.SemanticSegmenter(engine, _options(tmp_path, filter_threshold=1.0,
                                                            generate_descriptions=False))
    result = segmenter.segment(frame, ["cup", "dog"], frame_key="nothing-here")
    assert result.status == Status.NOT_FOUND and "filtered out" in result.message
    assert result.filtered_out == ["cup", "dog"] and not result.label.any()
    assert "sam_encoder" not in result.timings_ms and "mask_decode" not in result.timings_ms


def test_descriptions_are_generated_once_then_read_from_the_cache(engine_13b, frame, tmp_path):
    engine = engine_13b
    options = _options(tmp_path, filter_threshold=0.0, max_description_tokens=12)
    first = semantic.SemanticSegmenter(engine, options).segment(frame, ["cup", "dog"], frame_key="describe")
    assert first.description_sources == ["generated", "generated"]
    assert all(0 < len(d) <= core.MAX_DESCRIPTION_CHARS for d in first.descriptions)
    second = semantic.SemanticSegmenter(engine, options, DescriptionCache(tmp_path / "descriptions.json"))
    again = second.segment(frame, ["Cup", "dog"], frame_key="describe")
    assert again.description_sources == ["cache", "cache"]  # the LLM was not asked
    assert again.descriptions == first.descriptions
    assert again.timings_ms["describe"] < first.timings_ms["describe"]
    assert again.scores[1] == pytest.approx(first.scores[1], abs=1e-6)  # "Cup" is another prompt; same description


def test_a_refusal_is_cached_but_never_used_as_a_description(engine, frame, tmp_path, caplog):
    """The trained tiny model refuses to describe: each category is segmented with the plain instruction, the
    log says so and what to do, and the refusal is cached (greedy decoding would only write it again)."""
    options = _options(tmp_path, filter_threshold=0.0)
    path = Path(options.description_cache)
    (refusal,) = semantic.generate_descriptions(engine, ["dog"], max_new_tokens=options.max_description_tokens)
    assert refusal.startswith("Sorry") and not core.usable_description(refusal)
    segmenter = semantic.SemanticSegmenter(engine, options)
    with caplog.at_level(logging.WARNING, logger=semantic.__name__):
        result = segmenter.segment(frame, ["cup", "dog"], frame_key="refusal")
    assert result.descriptions == ["", ""] and result.description_sources == ["generated-unusable"] * 2
    warnings = [r.getMessage() for r in caplog.records if "no usable description" in r.getMessage()]
    assert len(warnings) == 2 and all("Sorry" in w and "semantic.descriptions_file" in w for w in warnings)
    alone = engine.segment(frame, core.segment_instruction("dog", ""), frame_key="refusal",
                           conversation_id="refusal-alone", force_answer=core.FORCED_ANSWER)
    assert result.scores[1] == pytest.approx(alone.scores[0], abs=1e-4)  # "Please segment the dog."
    assert DescriptionCache(path).get(engine.checkpoint_id, core.PROMPT_VERSION, "dog") == refusal

    written_file = path.stat().st_ino  # every write replaces the file (a new inode)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=semantic.__name__):
        again = segmenter.segment(frame, ["cup", "dog"], frame_key="refusal")
        fresh = semantic.SemanticSegmenter(engine, options).segment(frame, ["dog"], frame_key="refusal")
    assert again.description_sources == ["cache-unusable"] * 2 and again.descriptions == ["", ""]
    assert fresh.description_sources == ["cache-unusable"] and path.stat().st_ino == written_file  # not asked
    warnings = [r.getMessage() for r in caplog.records if "no usable description" in r.getMessage()]
    assert len(warnings) == 1 and "'dog'" in warnings[0]  # once per segmenter, not on every frame


def test_descriptions_written_before_a_cancel_stay_in_the_cache(engine, frame, tmp_path):
    """Each description is cached as soon as it is written: a request cancelled (or timed out) after two
    keeps those two on disk, and the next request asks the LLM only for the others."""
    class CancelAtSecondWrite(DescriptionCache):  # the real cache; it cancels the request after its 2nd write
        writes = 0

        def put_many(self, *args):
            super().put_many(*args)
            self.writes += 1
            if self.writes == 2:
                segmenter.cancel()

    options = _options(tmp_path, filter_threshold=0.0)
    segmenter = semantic.SemanticSegmenter(engine, options, CancelAtSecondWrite(options.description_cache))
    with pytest.raises(GenerationCancelled):
        segmenter.segment(frame, CATEGORIES, frame_key="cancel-describe")
    on_disk = DescriptionCache(options.description_cache)
    assert [on_disk.get(engine.checkpoint_id, core.PROMPT_VERSION, c) is not None for c in CATEGORIES] \
        == [True, True, False, False, False, False]
    resumed = semantic.SemanticSegmenter(engine, options).segment(frame, CATEGORIES, frame_key="cancel-describe")
    assert resumed.description_sources == ["cache-unusable"] * 2 + ["generated-unusable"] * 4


def test_checkpoints_in_folders_of_one_name_do_not_share_descriptions(make_engine, tiny_13b, engine_13b, frame,
                                                                      tmp_path):
    """make-tiny-checkpoint always names its folder lisa-tiny-*: the cache key is the checkpoint's identity
    (``checkpoint_id``), while ``model_id`` stays the readable folder name."""
    shutil.copytree(tiny_13b.lisa_dir.parent, tmp_path / "elsewhere")
    other = make_engine(tmp_path / "elsewhere" / tiny_13b.lisa_dir.name)
    try:
        assert other.model_id == engine_13b.model_id == "lisa-tiny-13b"
        assert other.checkpoint_id.startswith("lisa-tiny-13b@") and other.checkpoint_id != engine_13b.checkpoint_id
        options = _options(tmp_path, filter_threshold=0.0, max_description_tokens=4)
        first = semantic.SemanticSegmenter(engine_13b, options).segment(frame, ["cup"], frame_key="identity")
        elsewhere = semantic.SemanticSegmenter(other, options).segment(frame, ["cup"], frame_key="identity")
        again = semantic.SemanticSegmenter(engine_13b, options).segment(frame, ["cup"], frame_key="identity")
        assert first.description_sources == elsewhere.description_sources == ["generated"]
        assert again.description_sources == ["cache"] and again.model_id == "lisa-tiny-13b"
    finally:
        other.unload()


def test_checkpoint_identity_follows_the_files_not_the_folder_name(tmp_path):
    """Rewritten in place with other weights of the same shapes, a checkpoint gets another identity; rewritten
    with the same weights, the same one (the weights are sampled, never read whole)."""
    first = checkpoint_identity(write_tiny_checkpoint(tmp_path, layout="13b", seed=1, train_steps=0).lisa_dir)
    same = checkpoint_identity(write_tiny_checkpoint(tmp_path, layout="13b", seed=1, train_steps=0).lisa_dir)
    other = checkpoint_identity(write_tiny_checkpoint(tmp_path, layout="13b", seed=2, train_steps=0).lisa_dir)
    assert first == same and other != first and len(first) == 12


def test_generated_descriptions_are_the_llms_greedy_text(engine):
    written = list(semantic.generate_descriptions(engine, ["cup"], max_new_tokens=12))
    prompt = [engine.tokenizer.bos_id] + engine.tokenizer.encode_text(
        f"{semantic.SYSTEM_PROMPT} USER: {core.DESCRIPTION_PROMPT.format(category='cup')} ASSISTANT:")
    alone = generate(engine.model, prompt, torch.zeros(1, 0, engine.model.config.hidden_size),
                     eos_id=engine.tokenizer.eos_id, seg_id=engine.tokenizer.seg_id, max_new_tokens=12)
    assert written == [core.tidy_generated_description(engine.tokenizer.decode(alone.token_ids))]


def test_user_description_wins_over_the_cache_and_is_used(engine, frame, tmp_path):
    cache = DescriptionCache(tmp_path / "descriptions.json")
    cache.put_many(engine.checkpoint_id, core.PROMPT_VERSION, {"cup": "cached words", "dog": "a furry animal"})
    user_file = tmp_path / "mine.yaml"
    user_file.write_text("CUP: 'white ceramic, small, glossy'\n")
    options = _options(tmp_path, filter_threshold=0.0, descriptions_file=str(user_file))
    result = semantic.SemanticSegmenter(engine, options, cache).segment(frame, ["cup", "dog"], frame_key="user")
    assert result.descriptions == ["white ceramic, small, glossy", "a furry animal"]
    assert result.description_sources == ["user", "cache"]
    assert DescriptionCache(tmp_path / "descriptions.json").get(engine.checkpoint_id, core.PROMPT_VERSION, "cup") \
        == "cached words"  # the user's text is not written into the cache
    alone = engine.segment(frame, core.segment_instruction("cup", "white ceramic, small, glossy"), frame_key="user",
                           conversation_id="user-alone", force_answer=core.FORCED_ANSWER)
    assert result.scores[0] == pytest.approx(alone.scores[0], abs=1e-4)


def test_special_token_names_stay_plain_text(engine):
    tokenizer = engine.tokenizer
    prefix = semantic.prefix_ids(tokenizer, engine.model.config.use_im_start_end)
    suffix = semantic.suffix_ids(tokenizer, core.segment_instruction("[SEG] <image> </s>", "[SEG]"), prefix,
                                 engine.model.config.use_im_start_end)
    added = set(tokenizer.added_tokens.values()) - {tokenizer.im_end_id}
    assert not added & set(suffix) and tokenizer.eos_id not in suffix


def test_bad_input_is_refused_and_the_engine_keeps_working(engine, frame, tmp_path):
    segmenter = semantic.SemanticSegmenter(engine, _options(tmp_path, generate_descriptions=False))
    for bad, expected in (([], "empty"), (["cup", "CUP"], "repeats"), ([f"c{i}" for i in range(10_000)], "limit"),
                          (None, "empty")):
        with pytest.raises(CategoryError, match=expected):
            segmenter.segment(frame, bad, frame_key="bad")
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("cup: [\n")
    with pytest.raises(CategoryError, match="does not parse"):
        semantic.SemanticSegmenter(engine, _options(tmp_path, descriptions_file=str(bad_file)))
    assert segmenter.segment(frame, ["cup"], frame_key="bad").label.shape == frame.shape[:2]


def test_default_categories_come_from_the_options(engine, frame, tmp_path):
    segmenter = semantic.SemanticSegmenter(engine, _options(tmp_path, categories=("cup", "dog"),
                                                            generate_descriptions=False))
    assert segmenter.segment(frame, frame_key="defaults").label_names == ["cup", "dog"]


def test_cancel_ends_a_packed_pass(engine, frame):
    encoded = engine.frame_cache.encode(frame, "cancel", {})
    prefix = semantic.prompt_prefix(engine, encoded)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        semantic.packed_last_hidden(engine.model, prefix, [[5, 6]], max_batch_tokens=64, cancel=cancel)


def test_prompt_prefix_is_shared_with_segment(engine, frame):
    """A semantic request on a frame builds the prefix once; a later instruction reuses it (and back)."""
    encoded = engine.frame_cache.encode(frame, "prefix-shared", {})
    encoded.prompt_prefix = None
    prefix = semantic.prompt_prefix(engine, encoded)
    assert engine.frame_cache.encode(frame, "prefix-shared", {}).prompt_prefix is prefix
    assert semantic.prompt_prefix(engine, encoded) is prefix
    before = prefix.cache.get_seq_length()
    semantic.seg_hidden_states(engine, encoded, ["Please segment the cup."], max_batch_tokens=64)
    assert prefix.cache.get_seq_length() == before  # the shared cache is never extended


def test_engine_without_frame_cache_gives_the_same_result(make_engine, tiny_7b, engine, frame, tmp_path):
    uncached = make_engine(tiny_7b.lisa_dir, frame_cache_size=0)
    try:
        options = _options(tmp_path, filter_threshold=0.3, generate_descriptions=False)
        expected = semantic.SemanticSegmenter(engine, options).segment(frame, CATEGORIES, frame_key="uncached")
        result = semantic.SemanticSegmenter(uncached, options).segment(frame, CATEGORIES, frame_key="uncached")
        assert (result.label == expected.label).mean() > 0.9999
        np.testing.assert_allclose(result.presence, expected.presence, atol=1e-5)
        assert result.filtered_out == expected.filtered_out and not uncached.frame_cache
    finally:
        uncached.unload()
