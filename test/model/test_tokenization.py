"""Prompt ids equal the reference stack's (transformers 4.31 slow LlamaTokenizer), for both
values of tokenizer_config.json's ``legacy`` flag."""
from __future__ import annotations

import json
import random
import re
import shutil

import pytest

from lisa_ros.model.checkpoint_config import CheckpointError
from lisa_ros.model.tokenization import (
    IMAGE_PLACEHOLDER,
    SYSTEM_PROMPT,
    LisaTokenizer,
    Turn,
    build_prompt_ids,
)


def config_legacy(directory) -> bool:
    """The flag as 4.31 takes it: ``legacy=True`` unless the config passes a value (tested for truth)."""
    return bool(json.loads((directory / "tokenizer_config.json").read_text()).get("legacy", True))


def reference_ids(tokenizer: LisaTokenizer, prompt: str, legacy: bool) -> list[int]:
    """An independent re-statement of the reference: ``tokenizer_image_token`` over the
    4.31 slow tokenizer (``tokenize``: with legacy=False "▁" + the text with "▁" read as
    spaces; split at added/special tokens, strip whitespace around the added ones;
    ``_tokenize`` per segment: with legacy=False a segment not starting the call, nor with
    a space, loses the "▁" of its first piece; pieces to ids, unknown ones <unk>; BOS per
    chunk and dropped after the first)."""
    special = dict(tokenizer.added_tokens, **{"</s>": tokenizer.eos_id})
    pattern = "(" + "|".join(re.escape(t) for t in sorted(special, key=len, reverse=True)) + ")"

    def segment(text: str) -> list[str]:
        is_first = not legacy and text.startswith("▁")
        if is_first:
            text = text[1:]
        pieces = tokenizer.sp.EncodeAsPieces(text)
        if not legacy and not is_first and not text.startswith(" ") and pieces[0].startswith("▁"):
            pieces = ([pieces[0][1:]] if len(pieces[0]) > 1 else []) + pieces[1:]
        return pieces

    def slow(text: str) -> list[int]:
        if not legacy:
            text = "▁" + text.replace("▁", " ")
        parts = re.split(pattern, text)
        for i, part in enumerate(parts):
            if i % 2 and part in tokenizer.added_tokens:  # plain-str added tokens strip both sides
                parts[i - 1] = parts[i - 1].rstrip()
                parts[i + 1] = parts[i + 1].lstrip()
        ids = [tokenizer.bos_id]
        for i, part in enumerate(parts):
            if i % 2:
                ids.append(special[part])
            elif part:
                ids += [tokenizer.sp.PieceToId(piece) for piece in segment(part)]
        return ids

    chunks = [slow(chunk) for chunk in prompt.split("<image>")]
    ids = chunks[0]
    for chunk in chunks[1:]:
        ids += [IMAGE_PLACEHOLDER] + chunk[1:]
    return ids


def tokenizer_files(source, out, **config_changes):
    """A copy of a checkpoint's tokenizer files with tokenizer_config.json edited (None deletes a key)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.model", "added_tokens.json", "special_tokens_map.json"):
        shutil.copy(source / name, out / name)
    config = json.loads((source / "tokenizer_config.json").read_text())
    for key, value in config_changes.items():
        config.pop(key) if value is None else config.__setitem__(key, value)
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def tiny_7b_not_legacy(tiny_7b, tmp_path_factory):
    """The 7B layout's tokenizer files with ``legacy: false``."""
    return tokenizer_files(tiny_7b.lisa_dir, tmp_path_factory.mktemp("not-legacy"), legacy=False)


@pytest.fixture(scope="module", params=["7b", "13b", "7b-legacy-false"])
def tokenizer(request, tiny_7b, tiny_13b, tiny_7b_not_legacy):
    """7b: legacy true; 13b: legacy false (the generator's defaults); and the 7B files with false."""
    directory = {"7b": tiny_7b.lisa_dir, "13b": tiny_13b.lisa_dir, "7b-legacy-false": tiny_7b_not_legacy}
    loaded = LisaTokenizer.from_directory(directory[request.param])
    loaded.reference_legacy = config_legacy(directory[request.param])
    return loaded


def pieces_to_ids(tokenizer: LisaTokenizer, pieces: list[str]) -> list[int]:
    """Ids of hand-written pieces; every piece but <unk> must exist, so a pin cannot pass by accident."""
    ids = []
    for piece in pieces:
        token = tokenizer.added_tokens.get(piece, tokenizer.sp.PieceToId(piece))
        assert piece == "<unk>" or token != tokenizer.sp.unk_id(), f"{piece!r} is not in the vocabulary"
        ids.append(token)
    return ids


def test_seg_id_is_looked_up_per_layout(tiny_7b, tiny_13b):
    t7 = LisaTokenizer.from_directory(tiny_7b.lisa_dir)
    t13 = LisaTokenizer.from_directory(tiny_13b.lisa_dir)
    size7, size13 = t7.sp.GetPieceSize(), t13.sp.GetPieceSize()
    assert (t7.added_tokens["<im_patch>"], t7.im_start_id, t7.im_end_id, t7.seg_id) == tuple(range(size7, size7 + 4))
    assert (t13.seg_id, t13.im_start_id, t13.im_end_id) == tuple(range(size13, size13 + 3))


@pytest.mark.parametrize("instruction", [
    "What is the cup in this image? Please output segmentation mask.",
    "Can you segment the red car on the left, please?",
    "Where  is the plant (2 of them)?",
])
def test_prompt_ids_equal_reference(tokenizer, instruction):
    prompt = (f"{SYSTEM_PROMPT} USER: <im_start><image><im_end>\n{instruction} ASSISTANT:")
    ids = build_prompt_ids(tokenizer, instruction)
    assert ids == reference_ids(tokenizer, prompt, tokenizer.reference_legacy)
    assert ids.count(tokenizer.bos_id) == 1 and ids.count(IMAGE_PLACEHOLDER) == 1
    # The newline after <im_end> vanishes; the next text starts with the dummy prefix only if legacy.
    after = tokenizer.sp.IdToPiece(ids[ids.index(tokenizer.im_end_id) + 1])
    assert after.startswith("▁") == tokenizer.reference_legacy and "<0x0A>" not in after


@pytest.mark.parametrize("legacy", [True, False])
def test_prompt_without_im_start_end_equals_reference(tiny_7b, tmp_path, legacy):
    """Without <im_start>/<im_end> the text after <image> starts the reference's second call."""
    loaded = LisaTokenizer.from_directory(tokenizer_files(tiny_7b.lisa_dir, tmp_path, legacy=legacy))
    ids = build_prompt_ids(loaded, "Segment the cup.", use_im_start_end=False)
    assert ids == reference_ids(loaded, f"{SYSTEM_PROMPT} USER: <image>\nSegment the cup. ASSISTANT:", legacy)


def test_multi_turn_prompt_equals_reference(tokenizer):
    answer = tuple(tokenizer.encode_with_added_tokens("Sure, [SEG]."))
    ids = build_prompt_ids(tokenizer, "And the chair?", [Turn("Segment the cup.", answer)])
    prompt = (f"{SYSTEM_PROMPT} USER: <im_start><image><im_end>\nSegment the cup. ASSISTANT: Sure, [SEG].</s>"
              f"USER: And the chair? ASSISTANT:")
    assert ids == reference_ids(tokenizer, prompt, tokenizer.reference_legacy)


@pytest.mark.parametrize("text", ["Sure, [SEG].", "It is [SEG] and [SEG].", "Sure, [SEG]▁.", " [SEG]", "[SEG]"])
def test_scripted_answers_equal_reference(tokenizer, text):
    """force_answer's encoding: the answer starts its segment (after "ASSISTANT:", dummy prefix kept)."""
    assert tokenizer.encode_with_added_tokens(text) == reference_ids(tokenizer, text, tokenizer.reference_legacy)[1:]


# Pinned by hand from the tiny sentencepiece model's pieces (the generator's corpus has no bare
# "Please", "and" or "USER": legacy=False turns them into <unk>, as transformers 4.31 does).
PINNED = {
    True: {
        "Sure, [SEG].": ["▁Sure", ",", "[SEG]", "▁."],
        "It is [SEG] and [SEG].": ["▁It", "▁is", "[SEG]", "▁and", "[SEG]", "▁."],
        "after <im_end>": ["▁Please", "▁segment", "▁the", "▁cup", ".", "▁ASSISTANT", ":"],
        "after </s>": ["▁USER", ":", "▁A", "nd", "▁the", "▁cup", "?", "▁ASSISTANT", ":"],
    },
    False: {
        "Sure, [SEG].": ["▁Sure", ",", "[SEG]", "."],
        "It is [SEG] and [SEG].": ["▁It", "▁is", "[SEG]", "<unk>", "[SEG]", "."],
        "after <im_end>": ["<unk>", "▁segment", "▁the", "▁cup", ".", "▁ASSISTANT", ":"],
        "after </s>": ["<unk>", ":", "▁A", "nd", "▁the", "▁cup", "?", "▁ASSISTANT", ":"],
    },
}


@pytest.mark.parametrize("legacy", [True, False])
def test_pinned_ids_for_both_legacy_flags(tiny_7b, tmp_path, legacy):
    loaded = LisaTokenizer.from_directory(tokenizer_files(tiny_7b.lisa_dir, tmp_path, legacy=legacy))
    assert loaded.legacy is legacy
    pinned = PINNED[legacy]
    for text in ("Sure, [SEG].", "It is [SEG] and [SEG]."):
        assert loaded.encode_with_added_tokens(text) == pieces_to_ids(loaded, pinned[text]), text
    answer = tuple(loaded.encode_with_added_tokens("Sure, [SEG]."))
    ids = build_prompt_ids(loaded, "Please segment the cup.")
    assert ids[ids.index(loaded.im_end_id) + 1:] == pieces_to_ids(loaded, pinned["after <im_end>"])
    ids = build_prompt_ids(loaded, "And the cup?", [Turn("Please segment the cup.", answer)])
    assert ids[ids.index(loaded.eos_id) + 1:] == pieces_to_ids(loaded, pinned["after </s>"])


@pytest.mark.parametrize("value,expected", [(True, True), (False, False), (None, False), ("absent", True)])
def test_legacy_flag_is_read_from_tokenizer_config(tiny_7b, tmp_path, value, expected):
    """Absent: 4.31's default (true). 4.31 tests the value's truth, so an explicit null is false."""
    changes = {"legacy": None} if value == "absent" else {"legacy": value}
    directory = tokenizer_files(tiny_7b.lisa_dir, tmp_path, **changes)
    if value is None:  # tokenizer_files deletes keys given None: write the null by hand
        config = json.loads((directory / "tokenizer_config.json").read_text())
        (directory / "tokenizer_config.json").write_text(json.dumps(dict(config, legacy=None)))
    assert ("legacy" in json.loads((directory / "tokenizer_config.json").read_text())) == (value != "absent")
    assert LisaTokenizer.from_directory(directory).legacy is expected


def test_a_legacy_flag_that_is_not_a_boolean_is_refused(tiny_7b, tmp_path):
    directory = tokenizer_files(tiny_7b.lisa_dir, tmp_path, legacy="false")
    with pytest.raises(CheckpointError, match="legacy must be true, false or null"):
        LisaTokenizer.from_directory(directory)


def test_force_answer_is_encoded_with_the_checkpoint_flag(make_engine, tiny_7b, tiny_13b, frame):
    """engine.segment's force_answer goes through the same encoding (13b: legacy false)."""
    for checkpoint, legacy in ((tiny_7b, True), (tiny_13b, False)):
        assert config_legacy(checkpoint.lisa_dir) is legacy  # the generator's per-layout default
        engine = make_engine(checkpoint.lisa_dir)
        try:
            out = engine.segment(frame, "Segment the cup.", frame_key=1, force_answer="Sure, [SEG].")
            assert out.found
            assert list(engine.conversation()[-1].answer_ids) == pieces_to_ids(engine.tokenizer,
                                                                               PINNED[legacy]["Sure, [SEG]."])
        finally:
            engine.unload()


@pytest.mark.parametrize("text", ["[SEG]", "<image>", "<im_start>", "<im_end>", "</s>", "<s>", "<im_patch>"])
def test_user_text_never_becomes_special_tokens(tokenizer, text):
    ids = build_prompt_ids(tokenizer, f"Segment {text} now {text}")
    instruction_ids = ids[ids.index(tokenizer.im_end_id) + 1:]
    special = set(tokenizer.added_tokens.values()) | {tokenizer.eos_id, tokenizer.bos_id, IMAGE_PLACEHOLDER}
    assert not special & set(instruction_ids)
    assert ids.count(IMAGE_PLACEHOLDER) == 1
    assert text in tokenizer.sp.DecodeIds(instruction_ids)


def test_decode_drops_special_tokens(tokenizer):
    ids = tokenizer.encode_with_added_tokens("It is [SEG].") + [tokenizer.eos_id]
    assert tokenizer.decode(ids) == "It is."
    seg = tokenizer.seg_id  # words after [SEG] spelled with the dummy prefix: legacy=False has no bare "and"
    ids = tokenizer.encode_text("Sure,") + [seg] + tokenizer.encode_text("and") + [seg] + tokenizer.encode_text(".")
    assert tokenizer.decode(ids) == "Sure, and."


def test_decode_prefix_only_grows_and_is_a_prefix_of_the_final_text(tokenizer):
    """Streamed text never has to be taken back: random answers rich in the cases that change ``decode``'s
    text afterwards (a comma then a ".", the bytes of one character split over tokens, special tokens)."""
    rng = random.Random(0)
    size = tokenizer.sp.GetPieceSize()
    tricky = [tokenizer.sp.PieceToId(piece) for piece in (",", ".", "▁.", "!", "▁", "▁,")]
    tricky += [i for i in range(size) if tokenizer.sp.IsByte(i)] + [tokenizer.seg_id, tokenizer.eos_id]
    settled = 0
    for _ in range(500):
        ids = [rng.choice(tricky) if rng.random() < 0.6 else rng.randrange(tokenizer.vocab_size)
               for _ in range(rng.randint(1, 24))]
        final, previous = tokenizer.decode(ids), ""
        for end in range(1, len(ids) + 1):
            text = tokenizer.decode_prefix(ids[:end])
            assert text.startswith(previous) and final.startswith(text), (ids[:end], previous, text, final)
            previous = text
        settled += previous == final
    assert 0 < settled < 500  # the last text is often all of it, and sometimes held back: both cases were seen
