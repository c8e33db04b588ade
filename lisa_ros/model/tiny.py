"""Tiny LISA checkpoints in exactly the released layout, for tests, demos and benchmarks.

Writes ``<out>/lisa-tiny-<layout>/`` (``config.json``, slow-tokenizer files with the
7B or 13B added-token layout and a ``legacy`` flag, ``pytorch_model-0000N-of-00002.bin`` + index; LLM in
bf16, SAM and the ``[SEG]`` head in fp32, 4.31-style ``rotary_emb.inv_freq``
buffers in the 7B layout) and ``<out>/clip-vit-tiny/`` (a CLIPModel directory like
openai/clip-vit-large-patch14). The small SAM is this project's extension, declared
by the config's ``lisa_ros_tiny_sam`` block; released checkpoints are ViT-H.

The LLM is briefly trained (deterministic, a few seconds on a CPU) to answer like
LISA ("Sure, [SEG].", "It is [SEG].", "Sure, [SEG] and [SEG].", or a refusal
without [SEG]), so demos exercise every path. Its masks are meaningless: CLIP and
SAM are random.
"""
from __future__ import annotations

import dataclasses
import io
import json
import random
from pathlib import Path

import sentencepiece
import torch
from transformers import CLIPConfig, CLIPModel
from transformers.cache_utils import DynamicCache

from lisa_ros.model.checkpoint import convert_to_safetensors
from lisa_ros.model.checkpoint_config import load_lisa_config
from lisa_ros.model.loading import checkpoint_key, read_clip_config
from lisa_ros.model.modeling import LisaModel
from lisa_ros.model.tokenization import SYSTEM_PROMPT, LisaTokenizer, build_prompt_ids

LAYOUTS = ("7b", "13b")
# tokenizer_config.json's "legacy": "default" is the layout's (7b: true, as the LLaMA-1/Vicuna
# era saved it; 13b: false, as LLaMA-2 tokenizers are saved); "absent" leaves the key out.
LEGACY_CHOICES = ("default", "true", "false", "absent")
CLIP_DIR_NAME = "clip-vit-tiny"
NOTE = ("Tiny random LISA checkpoint written by `lisa-ros make-tiny-checkpoint` for tests and demos. "
        "The LLM was trained for a few seconds to answer in LISA's style; CLIP and SAM are random, so its "
        "masks are meaningless. The small SAM (lisa_ros_tiny_sam) is a lisa_ros extension: released LISA "
        "checkpoints are always SAM ViT-H.")
TINY_SAM = {
    "encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2, "encoder_global_attn_indexes": [1],
    "decoder_mlp_dim": 64, "decoder_num_heads": 2, "iou_head_hidden_dim": 32,
}
OBJECTS = ("cup", "person", "car", "dog", "chair", "bottle", "table", "window", "door", "plant", "ball",
           "rocket", "cat", "horse", "bicycle", "laptop", "coffee", "saucer", "tree", "bird")
# (instruction templates, answer): the answer shapes of the released models.
STYLES = (
    (("Please segment the {a}.", "Can you segment the {a} in this image?",
      "Can you segment the {a} in this image? Please output segmentation mask.",
      "Where is the {a}? Please output segmentation mask."), "Sure, [SEG]."),
    (("What is the {a} in this image? Please respond with segmentation mask.",
      "Which object in this picture is a {a}? Please output segmentation mask.",
      "What object could be used as a {a}? Please output segmentation mask."), "It is [SEG]."),
    (("Please segment the {a} and the {b}.", "Segment the {a} and the {b}. Please output segmentation masks."),
     "Sure, [SEG] and [SEG]."),
    (("Hello!", "How are you?", "Describe this image.", "Tell me a joke about the {a}.",
      "What time is it?", "Is it going to rain today?"), "Sorry, I can only segment objects in the image."),
)


@dataclasses.dataclass(frozen=True)
class TinyCheckpoint:
    lisa_dir: Path
    clip_dir: Path


def _examples(rng: random.Random, count: int) -> list[tuple[str, str]]:
    examples = []
    for _ in range(count):
        templates, answer = rng.choice(STYLES)
        first, second = rng.sample(OBJECTS, 2)
        examples.append((rng.choice(templates).format(a=first, b=second), answer))
    return examples


def _train_tokenizer(layout: str) -> tuple[bytes, dict[str, int]]:
    corpus = [SYSTEM_PROMPT, "USER: ASSISTANT:"]
    for templates, answer in STYLES:
        corpus += [t.format(a=a, b="the " + b) for t in templates for a, b in zip(OBJECTS, OBJECTS[1:])]
        corpus.append(answer.replace("[SEG]", ""))
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=600, hard_vocab_limit=False,
        model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        character_coverage=1.0, num_threads=1, minloglevel=2,
    )
    size = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue()).GetPieceSize()
    names = ("<im_patch>", "<im_start>", "<im_end>", "[SEG]") if layout == "7b" else ("[SEG]", "<im_start>", "<im_end>")
    return model.getvalue(), {name: size + i for i, name in enumerate(names)}


def _lisa_config(layout: str, vocab_size: int, intermediate_size: int = 128) -> dict:
    config = {
        "_name_or_path": f"lisa-ros/lisa-tiny-{layout}", "architectures": ["LISAForCausalLM"], "model_type": "llava",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu", "hidden_size": 64,
        "initializer_range": 0.02, "intermediate_size": intermediate_size, "max_position_embeddings": 2048,
        "num_attention_heads": 4, "num_hidden_layers": 2, "rms_norm_eps": 1e-6, "rope_scaling": None,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.31.0",
        "use_cache": False, "vocab_size": vocab_size,
        "freeze_mm_mlp_adapter": True, "image_aspect_ratio": "square", "mm_hidden_size": 32,
        "mm_use_im_patch_token": False, "mm_use_im_start_end": True, "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2, "mm_vision_tower": f"../{CLIP_DIR_NAME}", "vision_tower": f"../{CLIP_DIR_NAME}",
        "tune_mm_mlp_adapter": False, "use_mm_proj": True, "out_dim": 32, "train_mask_decoder": True,
        "lisa_ros_tiny_sam": TINY_SAM, "lisa_ros_note": NOTE,
    }
    if layout == "13b":  # LLaMA-2 fields
        config.update(max_position_embeddings=4096, rms_norm_eps=1e-5, num_key_value_heads=4, pretraining_tp=1)
    return config


def _tiny_clip(seed: int) -> CLIPModel:
    torch.manual_seed(seed + 1)
    return CLIPModel(CLIPConfig(
        text_config={"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 1, "eos_token_id": 2,
                     "pad_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
                       "image_size": 224, "patch_size": 14},
        projection_dim=32,
    ))


def _train(model: LisaModel, tokenizer: LisaTokenizer, seed: int, steps: int, batch: int = 8) -> None:
    """Teaches the tiny LLM the answer shapes (loss on answer tokens only).

    The prompt prefix up to ``<im_end>`` (system prompt and 256 image features) is
    the same for a batch: it is encoded once per step without gradients into a KV
    cache, and only the instructions and answers are trained, right-padded (with
    causal attention, padding after a sequence cannot change its positions).
    """
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        images = torch.randn(4, 3, 224, 224, generator=generator)
        tower = [model.vision_tower(pixel_values=image[None]).last_hidden_state[:, 1:] for image in images]
    prefix = build_prompt_ids(tokenizer, "")
    prefix = prefix[: prefix.index(tokenizer.im_end_id) + 1]
    trainable = list(model.llm.parameters()) + list(model.mm_projector.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=4e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    embeddings = model.llm.get_input_embeddings()
    model.train()
    for _ in range(steps):
        cache = DynamicCache(config=model.llm.config)
        with torch.no_grad():
            model.decoder_hidden(model.embed(prefix, model.mm_projector(rng.choice(tower))), cache)
        cache.batch_repeat_interleave(batch)
        suffixes, labels = [], []
        for instruction, answer in _examples(rng, batch):
            question = build_prompt_ids(tokenizer, instruction)[len(prefix):]  # exactly as at inference
            target = tokenizer.encode_with_added_tokens(answer) + [tokenizer.eos_id]
            suffixes.append(torch.tensor(question + target[:-1]))
            labels.append(torch.tensor([-100] * (len(question) - 1) + target))
        inputs = torch.nn.utils.rnn.pad_sequence(suffixes, batch_first=True)  # (B, S)
        targets = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=-100)  # (B, S)
        logits = model.llm.lm_head(model.decoder_hidden(embeddings(inputs), cache))  # (B, S, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
    model.eval()


def write_tiny_checkpoint(out_dir: str | Path, layout: str = "7b", seed: int = 0, safetensors: bool = False,
                          train_steps: int = 200, legacy: str = "default", intermediate_size: int = 128
                          ) -> TinyCheckpoint:
    """Writes the tiny LISA and CLIP directories under ``out_dir``; same seed, same files.

    ``intermediate_size``: the LLaMA MLP width (tests use one that is not a multiple of 32).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if legacy not in LEGACY_CHOICES:
        raise ValueError(f"legacy must be one of {LEGACY_CHOICES}, got {legacy!r}")
    if legacy == "default":
        legacy = "true" if layout == "7b" else "false"
    out_dir = Path(out_dir)
    lisa_dir, clip_dir = out_dir / f"lisa-tiny-{layout}", out_dir / CLIP_DIR_NAME
    lisa_dir.mkdir(parents=True, exist_ok=True)
    clip_dir.mkdir(parents=True, exist_ok=True)

    with torch.random.fork_rng():
        clip = _tiny_clip(seed)
        clip.save_pretrained(clip_dir)
        sp_model, added = _train_tokenizer(layout)
        _write_tokenizer(lisa_dir, sp_model, added, legacy)
        raw_config = _lisa_config(layout, max(added.values()) + 1, intermediate_size)
        (lisa_dir / "config.json").write_text(json.dumps(raw_config, indent=2))
        config = load_lisa_config(lisa_dir)
        torch.manual_seed(seed)
        model = LisaModel(config, read_clip_config(clip_dir, config))
        model.vision_tower.load_state_dict(clip.vision_model.state_dict(), strict=False)
        if train_steps:
            _train(model, LisaTokenizer.from_directory(lisa_dir), seed, train_steps)
    _write_weights(lisa_dir, model, layout)
    (lisa_dir / "README.md").write_text(f"# lisa-tiny-{layout}\n\n{NOTE}\n")
    if safetensors:
        convert_to_safetensors(lisa_dir, lisa_dir)
    return TinyCheckpoint(lisa_dir, clip_dir)


def _write_tokenizer(directory: Path, sp_model: bytes, added: dict[str, int], legacy: str = "true") -> None:
    """The files transformers 4.31 saves for LISA's slow LlamaTokenizer (``legacy``: true, false or absent)."""
    (directory / "tokenizer.model").write_bytes(sp_model)
    (directory / "added_tokens.json").write_text(json.dumps(added, indent=2, sort_keys=True))

    def token(content: str) -> dict:
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}

    config = {
        "add_bos_token": True, "add_eos_token": False, "bos_token": token("<s>"), "clean_up_tokenization_spaces": False,
        "eos_token": token("</s>"), "legacy": legacy == "true", "model_max_length": 512, "pad_token": None,
        "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
        "unk_token": token("<unk>"),
    }
    if legacy == "absent":
        del config["legacy"]
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"}, indent=2))


def _write_weights(directory: Path, model: LisaModel, layout: str) -> None:
    """Two pickle shards (LLM layers; the rest) and ``pytorch_model.bin.index.json``."""
    shards: tuple[dict, dict] = ({}, {})
    for name, tensor in model.state_dict().items():
        if name.startswith("vision_tower."):
            continue  # released checkpoints carry no CLIP weights
        key = checkpoint_key(name)
        dtype = torch.bfloat16 if name.startswith(("llm.", "mm_projector.")) else torch.float32
        shards[0 if key.startswith("model.layers.") else 1][key] = tensor.detach().to(dtype).clone()
    if layout == "7b":  # transformers 4.31 saved the rotary buffers
        inv_freq = model.llm.model.rotary_emb.inv_freq.detach().float()
        for index in range(len(model.llm.model.layers)):
            shards[0][f"model.layers.{index}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    weight_map, total = {}, 0
    for number, shard in enumerate(shards, start=1):
        name = f"pytorch_model-{number:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, directory / name)
        for key, tensor in shard.items():
            weight_map[key] = name
            total += tensor.numel() * tensor.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
