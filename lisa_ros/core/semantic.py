"""Semantic mode, the ROS-free and torch-free half: categories, descriptions, prompts, label images.

Semantic mode labels every pixel with one of a category list chosen at run time
(after LMSeg): each category gets a description (the user's, or one the LLM wrote),
absent categories are filtered out by a yes/no question, and each remaining category
gets a mask from one ``[SEG]``; the label image is the per-pixel argmax of the mask
logits. Label ids are the categories' positions in the list plus one, whatever was
filtered out, so a costmap layer can keep one id -> name map for a fixed list;
0 is "unlabelled". The model-side steps are in ``lisa_ros.model.semantic``.
"""
from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lisa_ros.core.bounds import shown
from lisa_ros.core.types import Status

UNLABELLED = 0
MONO8_MAX_CATEGORIES = 255    # ids 1..255 fit a mono8 label image; more need 16UC1
MAX_CATEGORIES = 1000         # hard cap: every category costs prompt tokens and a mask at source resolution
MAX_CATEGORY_CHARS = 100
MAX_DESCRIPTION_CHARS = 300
MAX_DESCRIPTION_FILE_BYTES = 1 << 20

# The prompts are part of the method: a changed wording must change PROMPT_VERSION, which keys the
# description cache (descriptions written from an older prompt are not reused).
PROMPT_VERSION = "describe-v1"
DESCRIPTION_PROMPT = ("In one short sentence, describe what a {category} typically looks like: its colour, "
                      "its shape and size, and its texture or material.")
PRESENCE_QUESTION = "Is there a {category} in the image? Please answer yes or no."
SEGMENT_INSTRUCTION = "Please segment the {category}: {description}"
SEGMENT_INSTRUCTION_PLAIN = "Please segment the {category}."
FORCED_ANSWER = "Sure, [SEG]."

# Categories on distinct hues for overlays (RGB); cycled beyond its length.
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
], dtype=np.uint8)


class CategoryError(ValueError):
    """The category list or the description file cannot be used; the message says what to fix."""


def normalise_category(name: str) -> str:
    """Surrounding whitespace dropped, inner runs of whitespace made one space, Unicode NFC."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", name)).strip()


def category_key(name: str) -> str:
    """What two names must share to be the same category (case does not make a new one)."""
    return normalise_category(name).casefold()


def validate_categories(names: Any, max_categories: int = MAX_CATEGORIES) -> list[str]:
    """The normalised category list, or CategoryError naming every problem (the first few of each kind).

    Names that contain ``[SEG]``, ``<image>`` or ``</s>`` are accepted: they are always
    tokenized as plain text, never as the model's special tokens.
    """
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise CategoryError(f"categories must be a list of names, got {type(names).__name__}")
    if not names:
        raise CategoryError("the category list is empty; give at least one category (e.g. ['floor', 'person'])")
    limit = min(max_categories, MAX_CATEGORIES)
    if len(names) > limit:
        raise CategoryError(f"{len(names)} categories is more than the limit of {limit}: each one costs prompt "
                            f"tokens and a source-resolution mask. Fix: split the list into several requests")
    problems: list[str] = []
    cleaned: list[str] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(names):
        if not isinstance(raw, str):
            problems.append(f"#{index} is a {type(raw).__name__}, not text")
            continue
        name = normalise_category(raw)
        if not name:
            problems.append(f"#{index} is empty or only whitespace")
        elif any(unicodedata.category(c) in ("Cc", "Cs") for c in name) or "\ufffd" in name:
            problems.append(f"#{index} {name[:40]!r} contains control or invalid characters")
        elif len(name) > MAX_CATEGORY_CHARS:
            problems.append(f"#{index} has {len(name)} characters (limit {MAX_CATEGORY_CHARS}); use a short name "
                            f"and put details in its description")
        elif category_key(name) in first_index:
            problems.append(f"#{index} {name!r} repeats #{first_index[category_key(name)]} (names are compared "
                            f"ignoring case and extra whitespace)")
        else:
            first_index[category_key(name)] = index
        cleaned.append(name)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CategoryError(f"invalid category list: {shown}")
    return cleaned


def validate_description(category: str, text: Any, source: str) -> str:
    """One description, whitespace tidied; CategoryError says which entry of ``source`` is wrong."""
    if not isinstance(text, str):
        raise CategoryError(f"{source}: the description of {category!r} is a {type(text).__name__}, not text. "
                            f"Fix: write 'category: description' with the description as plain text")
    cleaned = normalise_category(text)
    if not cleaned:
        raise CategoryError(f"{source}: the description of {category!r} is empty. Fix: describe it or remove it")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in cleaned):
        raise CategoryError(f"{source}: the description of {category!r} contains control characters")
    if len(cleaned) > MAX_DESCRIPTION_CHARS:
        raise CategoryError(f"{source}: the description of {category!r} has {len(cleaned)} characters "
                            f"(limit {MAX_DESCRIPTION_CHARS}). Fix: keep to colour, shape/size, texture/material")
    return cleaned


def load_descriptions(path: str | Path) -> dict[str, str]:
    """A YAML file of ``category: description`` -> {category_key: description}.

    Raises CategoryError when the file is missing, too large, does not parse, is not a
    mapping, or holds anything but text (with the line where YAML reports it).
    """
    path = Path(path).expanduser()
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_DESCRIPTION_FILE_BYTES:
            raise CategoryError(f"{source} is {size} bytes; a description file is limited to "
                                f"{MAX_DESCRIPTION_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CategoryError(f"description file {source} does not exist. Fix: the path, or '' for none") from None
    except UnicodeDecodeError as error:
        raise CategoryError(f"{source} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise CategoryError(f"cannot read description file {source}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise CategoryError(f"{source} does not parse as YAML{where}: {problem}. Fix: one 'category: description' "
                            f"per line (quote descriptions that contain ': ' or '#')") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CategoryError(f"{source} holds a YAML {type(data).__name__}, not a mapping. Fix: one "
                            f"'category: description' per line")
    descriptions: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not normalise_category(key):
            raise CategoryError(f"{source}: the key {key!r} is not a category name. Fix: quote it as text")
        if category_key(key) in descriptions:
            raise CategoryError(f"{source}: {key!r} is described twice (names are compared ignoring case)")
        descriptions[category_key(key)] = validate_description(normalise_category(key), value, source)
    return descriptions


def tidy_generated_description(text: str) -> str:
    """The LLM's description cut to its first line and sentence and to the length limit ("" if nothing)."""
    line = next((part for part in text.splitlines() if part.strip()), "")
    line = normalise_category(line)
    sentence = re.match(r"(.+?[.!?])(\s|$)", line)
    if sentence:
        line = sentence.group(1)
    line = "".join(c for c in line if unicodedata.category(c) not in ("Cc", "Cs"))
    return line[:MAX_DESCRIPTION_CHARS].strip()


# Generated text that starts like one of these (casefolded, ’ read as ') is a refusal, not a description:
# the tiny checkpoint answers every description prompt "Sorry, I can only segment objects in the image."
REFUSAL_START = re.compile(r"(sorry|i'm sorry|i am sorry|i can't|i cannot|as an ai)\b")


def usable_description(text: str) -> bool:
    """False for a generated description that is empty or a refusal (``REFUSAL_START``): the category is
    then segmented without one rather than with the model's excuse in its prompt."""
    folded = text.casefold().replace("\u2019", "'").lstrip("\"'\u201c\u2018 ")
    return bool(folded) and REFUSAL_START.match(folded) is None


def segment_instruction(category: str, description: str) -> str:
    """The instruction behind a category's ``[SEG]``."""
    if description:
        return SEGMENT_INSTRUCTION.format(category=category, description=description)
    return SEGMENT_INSTRUCTION_PLAIN.format(category=category)


@dataclasses.dataclass(frozen=True)
class SemanticOptions:
    """The ``semantic.<key>`` parameters; per-request categories override ``categories``."""

    categories: tuple[str, ...] = ()
    descriptions_file: str = ""       # YAML 'category: description'; always wins over generated ones
    generate_descriptions: bool = True
    description_cache: str = ""       # "" = $XDG_CACHE_HOME/lisa_ros/descriptions.json
    max_description_tokens: int = 48
    filter_threshold: float = 0.5     # keep a category when P(Yes) >= this; 0 = no filter pass
    label_threshold: float = 0.0      # mask logit below which a pixel stays unlabelled (0 = SAM's own threshold)
    max_categories: int = MAX_CATEGORIES
    max_batch_tokens: int = 2048      # tokens per batched forward pass (bounds activation memory)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> SemanticOptions:
        """Validates every option; raises CategoryError (a ValueError) naming each problem."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise CategoryError(f"unknown semantic option(s) {unknown}; known: {sorted(fields)}")
        values = dict(options)
        if "categories" in values:
            values["categories"] = tuple(validate_categories(list(values["categories"]))) if values["categories"] \
                else ()
        for name in ("filter_threshold", "label_threshold"):
            if isinstance(values.get(name), int) and not isinstance(values.get(name), bool):
                values[name] = float(values[name])
        problems = []
        for name, value in values.items():
            expected = type(fields[name].default)
            if type(value) is not expected:
                problems.append(f"{name} must be {expected.__name__}, got {shown(value)}")
        if problems:
            raise CategoryError("; ".join(problems))
        result = cls(**values)
        result._check()
        return result

    def _check(self) -> None:
        problems = []
        if not 0.0 <= self.filter_threshold <= 1.0:
            problems.append(f"filter_threshold must be in [0, 1], got {self.filter_threshold}")
        if not math.isfinite(self.label_threshold):
            problems.append(f"label_threshold must be finite, got {self.label_threshold}")
        if not 1 <= self.max_description_tokens <= 256:
            problems.append(f"max_description_tokens must be in [1, 256], got {self.max_description_tokens}")
        if not 1 <= self.max_categories <= MAX_CATEGORIES:
            problems.append(f"max_categories must be in [1, {MAX_CATEGORIES}], got {self.max_categories}")
        if not 64 <= self.max_batch_tokens <= 65536:
            problems.append(f"max_batch_tokens must be in [64, 65536], got {self.max_batch_tokens}")
        if problems:
            raise CategoryError("; ".join(problems))


def label_dtype(num_categories: int) -> np.dtype:
    """uint8 (mono8) up to 255 categories, uint16 (16UC1) beyond: fixed by the list, not by the frame."""
    if not 0 <= num_categories <= MAX_CATEGORIES:
        raise CategoryError(f"{num_categories} categories is outside 0..{MAX_CATEGORIES}")
    return np.dtype(np.uint8) if num_categories <= MONO8_MAX_CATEGORIES else np.dtype(np.uint16)


class LabelArgmax:
    """Per-pixel argmax over mask logits that arrive in chunks: two (H, W) arrays, whatever the count.

    Overlapping masks go to the category with the larger logit (the first added on a
    tie), never to whichever was drawn last; ``label()`` leaves 0 where every logit is
    below ``threshold``.
    """

    def __init__(self, shape: tuple[int, int], num_categories: int, threshold: float = 0.0):
        self.dtype = label_dtype(num_categories)
        self.num_categories = num_categories
        self.threshold = threshold
        self.best = np.full(shape, -np.inf, np.float32)
        self.ids = np.zeros(shape, self.dtype)

    def add(self, logits: np.ndarray, label_ids: Sequence[int]) -> None:
        """(n, H, W) logits; ``label_ids[i]`` is the id of ``logits[i]``."""
        logits = np.asarray(logits)
        if logits.ndim != 3 or logits.shape[1:] != self.best.shape:
            raise ValueError(f"logits must be (N, {self.best.shape[0]}, {self.best.shape[1]}), got {logits.shape}")
        if len(label_ids) != logits.shape[0]:
            raise ValueError(f"{len(label_ids)} label ids for {logits.shape[0]} masks")
        if not len(label_ids):
            return
        ids = np.asarray(label_ids, dtype=np.int64)
        if ids.min() < 1 or ids.max() > self.num_categories:
            raise ValueError(f"label ids must be in 1..{self.num_categories}, got {ids.min()}..{ids.max()}")
        best = np.argmax(logits, axis=0)
        top = np.take_along_axis(logits, best[None], axis=0)[0]
        better = top > self.best
        self.best[better] = top[better]
        self.ids[better] = ids.astype(self.dtype)[best[better]]

    def label(self) -> np.ndarray:
        return np.where(self.best >= self.threshold, self.ids, self.dtype.type(UNLABELLED))


def label_image(logits: np.ndarray, label_ids: Sequence[int], num_categories: int,
                threshold: float = 0.0) -> np.ndarray:
    """Per-pixel argmax of (N, H, W) mask logits -> (H, W) label ids; 0 where every logit < ``threshold``."""
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"logits must be (N, H, W), got shape {logits.shape}")
    argmax = LabelArgmax(logits.shape[1:], num_categories, threshold)
    argmax.add(logits, label_ids)
    return argmax.label()


def label_fractions(label: np.ndarray, num_categories: int) -> np.ndarray:
    """(num_categories,) share of the image's pixels carrying each id 1..num_categories."""
    counts = np.bincount(label.ravel(), minlength=num_categories + 1)[1:num_categories + 1]
    return counts / max(label.size, 1)


def label_overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The RGB frame with each label id blended in its palette colour (unlabelled pixels unchanged)."""
    if image.shape[:2] != label.shape:
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the label image {label.shape[1]}x"
                         f"{label.shape[0]}")
    colours = PALETTE[(label.astype(np.int64) - 1) % len(PALETTE)].astype(np.float32)
    labelled = (label != UNLABELLED)[..., None]
    blended = np.where(labelled, (1.0 - alpha) * image.astype(np.float32) + alpha * colours, image)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


@dataclasses.dataclass
class SemanticResult:
    """One semantic request's answer; the fields mirror msg/SemanticSegmentation.msg.

    Per-category lists are aligned with ``label_names`` (the whole requested list, so
    ids stay stable): ``scores`` is SAM's IoU prediction (0 for a category filtered
    out), ``presence`` the filter's P(Yes) (NaN when the filter is off), ``fractions``
    the share of pixels the category got in ``label``. A source "generated-unusable" or
    "cache-unusable" means the model wrote no usable description (``usable_description``),
    now or before: the category was segmented without one.
    """

    label: np.ndarray                                  # (H, W) uint8 (<= 255 categories) or uint16; 0 = unlabelled
    label_ids: list[int]
    label_names: list[str]
    scores: list[float]
    presence: list[float]
    fractions: list[float]
    filtered_out: list[str]
    filtered_reasons: list[str]
    descriptions: list[str]                            # the description each category was segmented with ("" none)
    description_sources: list[str]                     # "user" | "cache" | "generated" | "none" | "*-unusable"
    timings_ms: dict[str, float]
    status: Status = Status.OK
    message: str = ""
    model_id: str = ""

    @classmethod
    def failure(cls, status: Status, message: str, categories: Sequence[str] = (),
                shape: tuple[int, int] = (0, 0), model_id: str = "") -> SemanticResult:
        """An answer that carries only a status and the reason (an all-unlabelled label image)."""
        names = list(categories)
        count = len(names)
        dtype = label_dtype(min(count, MAX_CATEGORIES))
        return cls(np.zeros(shape, dtype), list(range(1, count + 1)), names, [0.0] * count, [math.nan] * count,
                   [0.0] * count, [], [], [""] * count, ["none"] * count, {}, status, message, model_id)

    @property
    def present(self) -> list[str]:
        """Names of the categories that got at least one pixel."""
        return [name for name, fraction in zip(self.label_names, self.fractions) if fraction > 0]
