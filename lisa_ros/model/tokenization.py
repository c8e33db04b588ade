"""LISA's tokenizer and ``llava_v1`` prompt, with the reference stack's exact ids.

The reference encodes with transformers 4.31's slow ``LlamaTokenizer``: the text is
split at added tokens, whitespace on both sides of an added token is stripped, and
every text segment goes through sentencepiece on its own. ``tokenizer_config.json``'s
``legacy`` flag (absent: 4.31's default, ``true``) decides the segments after an added
or special token: with ``legacy: true`` they get sentencepiece's dummy prefix ``▁``
like any text; with ``legacy: false`` 4.31 encodes them with the prefix and then cuts
the ``▁`` off their first piece (a bare piece missing from the vocabulary becomes
``<unk>``), and a ``▁`` in the text is read as a space. Newer transformers tokenizers
differ in exactly these points, so the text segments are encoded here with
``sentencepiece`` directly, around the added-token ids read from the checkpoint's
tokenizer files. User text is always encoded as plain text: an instruction that
literally contains ``[SEG]``, ``<image>`` or ``</s>`` never becomes a special token
(the reference would parse it).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import sentencepiece

from lisa_ros.model.checkpoint_config import CheckpointError, read_json

TOKENIZER_MODEL_FILE = "tokenizer.model"  # the sentencepiece model, in the checkpoint's directory
SPIECE_UNDERLINE = "▁"
SEG_TOKEN = "[SEG]"
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
# Placeholder id for the 256 CLIP features inside prompt ids (LLaVA's IMAGE_TOKEN_INDEX).
IMAGE_PLACEHOLDER = -200
SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
_UNSETTLED_END = re.compile(r"[\s,\ufffd]+$")  # what the next ids may still change in ``decode``'s text


@dataclasses.dataclass(frozen=True)
class Turn:
    """One answered turn: the user's instruction and the generated ids (no EOS)."""

    instruction: str
    answer_ids: tuple[int, ...]


class LisaTokenizer:
    def __init__(self, processor: sentencepiece.SentencePieceProcessor, added_tokens: dict[str, int],
                 legacy: bool = True):
        self.sp = processor
        self.added_tokens = dict(added_tokens)
        self.legacy = legacy
        self.bos_id = processor.bos_id()
        self.eos_id = processor.eos_id()
        for token in (SEG_TOKEN, IM_START_TOKEN, IM_END_TOKEN):
            if token not in self.added_tokens:
                raise ValueError(f"{token} is not among the added tokens {sorted(self.added_tokens)}")
        self.seg_id = self.added_tokens[SEG_TOKEN]
        self.im_start_id = self.added_tokens[IM_START_TOKEN]
        self.im_end_id = self.added_tokens[IM_END_TOKEN]
        self._special_ids = set(self.added_tokens.values()) | {self.bos_id, self.eos_id, processor.unk_id()}
        # Longest first so that one added token that prefixes another cannot split it.
        names = sorted(self.added_tokens, key=len, reverse=True)
        self._added_pattern = re.compile("(" + "|".join(re.escape(n) for n in names) + ")")

    @classmethod
    def from_directory(cls, directory: Path) -> LisaTokenizer:
        """Reads ``tokenizer.model`` plus the added tokens (``added_tokens.json`` or ``tokenizer_config.json``)."""
        fix = "copy tokenizer.model, added_tokens.json and tokenizer_config.json from the released checkpoint"
        model_path = directory / TOKENIZER_MODEL_FILE
        if not model_path.is_file():
            raise CheckpointError(f"{model_path} is missing. Fix: {fix}")
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.Load(str(model_path))
        except (OSError, RuntimeError) as error:
            raise CheckpointError(f"{model_path} is not a sentencepiece model ({error}). Fix: {fix}") from error
        added: dict[str, int] = {}
        legacy = True  # transformers 4.31's default when the config does not say
        config_path = directory / "tokenizer_config.json"
        if config_path.is_file():
            config = read_json(config_path, fix)
            legacy = config.get("legacy", True)
            if legacy is not None and not isinstance(legacy, bool):
                raise CheckpointError(f"{config_path}: legacy must be true, false or null, got {legacy!r}. Fix: {fix}")
            legacy = bool(legacy)  # 4.31 tests its truth: null behaves as false
            decoder = config.get("added_tokens_decoder") or {}
            for token_id, entry in decoder.items():
                if isinstance(entry, dict) and int(token_id) >= processor.GetPieceSize():
                    added[entry["content"]] = int(token_id)
        added_path = directory / "added_tokens.json"
        if added_path.is_file():
            added.update(read_json(added_path, fix))
        source = added_path if added_path.is_file() else config_path
        if not all(isinstance(v, int) and processor.GetPieceSize() <= v < processor.GetPieceSize() + 1024
                   for v in added.values()):
            raise CheckpointError(f"{source}: added token ids must follow the sentencepiece vocabulary. Fix: {fix}")
        missing = [t for t in (SEG_TOKEN, IM_START_TOKEN, IM_END_TOKEN) if t not in added]
        if missing:
            raise CheckpointError(f"{source} lacks the LISA tokens {missing}: not a LISA tokenizer. Fix: {fix}")
        return cls(processor, added, legacy)

    @property
    def vocab_size(self) -> int:
        return max(self.sp.GetPieceSize(), max(self.added_tokens.values()) + 1)

    def read(self, text: str) -> str:
        """The text as the reference tokenizer reads it: ``legacy: false`` takes a ``▁`` for a space."""
        return text if self.legacy else text.replace(SPIECE_UNDERLINE, " ")

    def encode_text(self, text: str, after_token: bool = False) -> list[int]:
        """Plain text as one sentencepiece segment; never special tokens.

        ``after_token``: the segment follows an added or special token in the reference's
        call (``<im_end>``, ``[SEG]``, ``</s>``), where ``legacy: false`` gives it no dummy prefix.
        """
        text = self.read(text)
        if not text:
            return []
        if self.legacy or not after_token or text.startswith(" "):
            return list(self.sp.EncodeAsIds(text))
        pieces = self.sp.EncodeAsPieces(text)
        if pieces[0].startswith(SPIECE_UNDERLINE):  # 4.31 cuts the dummy prefix off the first piece
            pieces = ([pieces[0][1:]] if len(pieces[0]) > 1 else []) + pieces[1:]
        return [self.sp.PieceToId(piece) for piece in pieces]  # unknown pieces: <unk>

    def encode_with_added_tokens(self, text: str) -> list[int]:
        """Trusted text (templates, scripted answers) as the reference slow tokenizer splits it."""
        ids: list[int] = []
        parts = self._added_pattern.split(self.read(text))  # text, token, text, ..., text (read before stripping)
        for index, part in enumerate(parts):
            if index % 2:
                ids.append(self.added_tokens[part])
                continue
            # Whitespace next to an added token is dropped, as in the reference.
            if index > 0:
                part = part.lstrip()
            if index < len(parts) - 1:
                part = part.rstrip()
            ids += self.encode_text(part, after_token=index > 0)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """The answer text without special tokens, whitespace tidied ("It is [SEG]." -> "It is.")."""
        pieces, run = [], []
        for token in list(ids) + [self.eos_id]:
            if token in self._special_ids or not 0 <= token < self.sp.GetPieceSize():
                if run:
                    pieces.append(self.sp.DecodeIds(run))
                run = []
            else:
                run.append(token)
        text = " ".join(p.strip() for p in pieces if p.strip())
        text = re.sub(r"\s+", " ", text)
        text = re.sub(r"\s+([.,!?;:])", r"\1", text)
        return re.sub(r",([.!?])", r"\1", text).strip()

    def decode_prefix(self, ids: Sequence[int]) -> str:
        """The part of ``decode(ids)`` that more ids cannot change: a streamed answer's text so far.

        Held back at the end: a comma (a "." after it removes it), whitespace, and U+FFFD (a
        character whose bytes have not all been generated). Each call's text starts with the
        previous one's and is a prefix of the final ``decode``.
        """
        return _UNSETTLED_END.sub("", self.decode(ids))

    def decode_raw(self, ids: Sequence[int]) -> str:
        """The answer with added tokens spelled out, for logs and history display."""
        parts, run = [], []
        names = {v: k for k, v in self.added_tokens.items()}
        for token in ids:
            if token in names:
                parts.append(self.sp.DecodeIds(run) if run else "")
                parts.append(names[token])
                run = []
            elif token not in (self.bos_id, self.eos_id):
                run.append(token)
        parts.append(self.sp.DecodeIds(run) if run else "")
        return " ".join(p for p in parts if p)


def build_prompt_ids(
    tokenizer: LisaTokenizer, instruction: str, history: Sequence[Turn] = (), *, use_im_start_end: bool = True
) -> list[int]:
    """Prompt ids of ``llava_v1``, the image placeholder in the first user turn.

    ``"{system} USER: <im_start><image><im_end>\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT:"``.
    Earlier answers are replayed as the ids the model generated. The reference tokenizes the
    text before and after ``<image>`` in two calls, so the text after ``<im_end>`` follows a
    token, while that after a bare ``<image>`` starts a call.
    """
    instructions = [tokenizer.read(text).strip() for text in [turn.instruction for turn in history] + [instruction]]
    if use_im_start_end:
        ids = [tokenizer.bos_id] + tokenizer.encode_text(f"{SYSTEM_PROMPT} USER:")
        ids += [tokenizer.im_start_id, IMAGE_PLACEHOLDER, tokenizer.im_end_id]
        ids += tokenizer.encode_text(f"{instructions[0]} ASSISTANT:", after_token=True)
    else:
        ids = [tokenizer.bos_id] + tokenizer.encode_text(f"{SYSTEM_PROMPT} USER: ") + [IMAGE_PLACEHOLDER]
        ids += tokenizer.encode_text(f"\n{instructions[0]} ASSISTANT:")
    for turn, following in zip(history, instructions[1:]):
        ids += list(turn.answer_ids) + [tokenizer.eos_id]
        ids += tokenizer.encode_text(f"USER: {following} ASSISTANT:", after_token=True)
    return ids

