"""Prompt ids equal the reference stack's (transformers 4.31 slow LlamaTokenizer, legacy=True)."""
from __future__ import annotations

import re

import pytest

from lisa_ros.model.tokenization import (
    IMAGE_PLACEHOLDER, SYSTEM_PROMPT, LisaTokenizer, Turn, build_prompt_ids,
)


def reference_ids(tokenizer: LisaTokenizer, prompt: str) -> list[int]:
    """An independent re-statement of the reference: ``tokenizer_image_token`` over the
    4.31 slow tokenizer (split at added/special tokens, strip whitespace around the added
    ones, sentencepiece per segment, BOS per chunk and dropped after the first)."""
    special = dict(tokenizer.added_tokens, **{"</s>": tokenizer.eos_id})
    pattern = "(" + "|".join(re.escape(t) for t in sorted(special, key=len, reverse=True)) + ")"

    def slow(text: str) -> list[int]:
        parts = re.split(pattern, text)
        for i, part in enumerate(parts):
            if i % 2 and part in tokenizer.added_tokens:  # plain-str added tokens strip both sides
                parts[i - 1] = parts[i - 1].rstrip()
                parts[i + 1] = parts[i + 1].lstrip()
        ids = [tokenizer.bos_id]
        for i, part in enumerate(parts):
            ids += [special[part]] if i % 2 else (tokenizer.sp.EncodeAsIds(part) if part else [])
        return ids

    chunks = [slow(chunk) for chunk in prompt.split("<image>")]
    ids = chunks[0]
    for chunk in chunks[1:]:
        ids += [IMAGE_PLACEHOLDER] + chunk[1:]
    return ids


@pytest.fixture(scope="module", params=["7b", "13b"])
def tokenizer(request, tiny_7b, tiny_13b):
    checkpoint = tiny_7b if request.param == "7b" else tiny_13b
    return LisaTokenizer.from_directory(checkpoint.lisa_dir)


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
    assert ids == reference_ids(tokenizer, prompt)
    assert ids.count(tokenizer.bos_id) == 1 and ids.count(IMAGE_PLACEHOLDER) == 1
    # The newline after <im_end> vanishes and the next text starts with the dummy prefix.
    after = ids[ids.index(tokenizer.im_end_id) + 1]
    assert tokenizer.sp.IdToPiece(after).startswith("▁") and "<0x0A>" not in tokenizer.sp.IdToPiece(after)


def test_multi_turn_prompt_equals_reference(tokenizer):
    answer = tuple(tokenizer.encode_with_added_tokens("Sure, [SEG]."))
    ids = build_prompt_ids(tokenizer, "And the chair?", [Turn("Segment the cup.", answer)])
    prompt = (f"{SYSTEM_PROMPT} USER: <im_start><image><im_end>\nSegment the cup. ASSISTANT: Sure, [SEG].</s>"
              f"USER: And the chair? ASSISTANT:")
    assert ids == reference_ids(tokenizer, prompt)


def test_seg_then_text_gets_leading_underline(tokenizer):
    ids = tokenizer.encode_with_added_tokens("Sure, [SEG].")
    seg = ids.index(tokenizer.seg_id)
    # The text after an added token gets sentencepiece's dummy prefix (LLaMA's vocabulary: "▁" ".").
    assert ids[seg + 1:] == tokenizer.sp.EncodeAsIds(".")
    assert tokenizer.sp.IdToPiece(ids[seg + 1]).startswith("▁")


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
    assert tokenizer.decode(tokenizer.encode_with_added_tokens("Sure, [SEG] and [SEG].")) == "Sure, and."
