"""LISA's fine-tuning recipe with PEFT: LoRA on the LLM, the [SEG] path trained in full, resumable.

Trained: LoRA (r 8, alpha 16, dropout 0.05) on the LLM's ``q_proj``/``v_proj``; ``lm_head``,
``embed_tokens`` (the ``[SEG]`` row is new in a base), ``text_hidden_fcs`` and SAM's
``mask_decoder`` in full. Frozen: CLIP, the projector, SAM's image encoder and prompt encoder,
everything else of the LLM. AdamW, linear warm-up then linear decay, gradient accumulation,
clipping: the released training code's settings, all overridable.

OUT/ holds ``adapter/`` (best validation gIoU; what a user deploys), ``last/`` (the final
weights), ``resume/`` (adapter + optimizer, scheduler, step and RNG: ``--resume`` continues
bit-for-bit), ``log.csv`` (one row per optimizer step) and ``tensorboard/`` when TensorBoard is
installed. Ctrl-C ends the run after the current optimizer step, saved.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import json
import logging
import math
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import peft
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from lisa_ros.model import adapter as adapter_files
from lisa_ros.model.checkpoint import resolve_checkpoint, resolve_vision_tower, weights_identity
from lisa_ros.model.checkpoint_config import CheckpointError, load_lisa_config
from lisa_ros.model.loading import Placement, checkpoint_key, load_lisa_model
from lisa_ros.model.modeling import LisaModel
from lisa_ros.model.quantization import QUANTIZED_PRECISIONS
from lisa_ros.model.tokenization import LisaTokenizer
from lisa_ros.tools import metrics
from lisa_ros.training.dataset import DatasetError, Sample, load_split
from lisa_ros.training.forward import FeatureCache, answer_ids, make_example, predict_mask, teacher_forced_losses
from lisa_ros.training.losses import Losses, LossWeights

logger = logging.getLogger(__name__)

TRAINING_PRECISIONS = ("fp32", "bf16", "int4")
# Parameter-name prefixes of the modules trained in full (besides LoRA).
TRAINED_PREFIXES = ("llm.lm_head.", "llm.model.embed_tokens.", "text_hidden_fcs.", "visual_model.mask_decoder.")
LOG_FIELDS = ("step", "epoch", "loss", "ce", "bce", "dice", "lr", "seconds")
INTERRUPTED = 130  # the shell's exit status after Ctrl-C


@dataclasses.dataclass(frozen=True)
class Recipe:
    """LISA's released settings by default; ``warmup_steps`` None = min(100, a tenth of the steps)."""

    epochs: int = 10
    batch_size: int = 2
    grad_accumulation: int = 10
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int | None = None
    clip_grad: float = 1.0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    ce_weight: float = 1.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    seed: int = 0

    @property
    def loss_weights(self) -> LossWeights:
        return LossWeights(self.ce_weight, self.bce_weight, self.dice_weight)

    def problems(self) -> list[str]:
        problems = [f"{name} must be >= 1" for name in ("epochs", "batch_size", "grad_accumulation", "lora_r")
                    if getattr(self, name) < 1]
        if not self.lr > 0:
            problems.append("lr must be > 0")
        if not 0 <= self.lora_dropout < 1:
            problems.append("lora_dropout must be in [0, 1)")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            problems.append("warmup_steps must be >= 0")
        return problems


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where the base comes from and how the run is kept (not part of the recipe)."""

    model: str
    vision_tower: str = ""
    device: str = "cpu"
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    max_new_tokens: int = 32  # validation answers
    feature_cache_mb: int = 4096
    save_every: int = 100  # optimizer steps between resume points (and at each epoch end, and on Ctrl-C)
    progress: bool = True
    revision: str | None = None
    cache_dir: str | None = None
    local_files_only: bool = False

    @property
    def hub(self) -> dict:
        return dict(revision=self.revision, cache_dir=self.cache_dir, local_files_only=self.local_files_only)


@dataclasses.dataclass(frozen=True)
class TrainingPlacement(Placement):
    """The loader's placement, computing in bf16 where inference would use fp16 (int4 on CUDA): training has
    no loss scaling, and fp16 gradients under- and overflow."""

    @property
    def compute_dtype(self) -> torch.dtype:
        if self.precision in QUANTIZED_PRECISIONS and self.device.type == "cuda":
            return torch.bfloat16
        return super().compute_dtype


@dataclasses.dataclass
class Base:
    model: LisaModel
    tokenizer: LisaTokenizer
    checkpoint_dir: Path
    name: str  # the model id or directory name, as the node reports it


def load_base(options: RunOptions) -> Base:
    """The base checkpoint through the node's resolution and loader."""
    hub = options.hub
    checkpoint_dir = resolve_checkpoint(options.model, **hub)
    config = load_lisa_config(checkpoint_dir)
    tower = options.vision_tower or config.vision_tower
    if not tower:
        raise CheckpointError(f"{checkpoint_dir}/config.json names no vision_tower. Fix: pass --vision-tower")
    clip_dir = resolve_vision_tower(tower, checkpoint_dir, **hub)
    placement = TrainingPlacement(torch.device(options.device), options.precision)
    model = load_lisa_model(checkpoint_dir, clip_dir, config, placement, progress=options.progress)
    path = Path(options.model).expanduser()
    return Base(model, LisaTokenizer.from_directory(checkpoint_dir), checkpoint_dir,
                path.name if path.is_dir() else options.model)


def add_lora(model: LisaModel, recipe: Recipe, *, quantized: bool, gradient_checkpointing: bool) -> peft.PeftModel:
    """LoRA injected in place into ``model.llm`` (LisaModel keeps calling it); the trained modules unfrozen.

    QLoRA: peft's k-bit preparation casts the LLM's floating-point parameters (norms, embeddings,
    ``lm_head``) to fp32, the 4-bit decoder linears stay quantized.
    """
    torch.manual_seed(recipe.seed)  # LoRA A's initialisation
    if quantized:
        peft.prepare_model_for_kbit_training(model.llm, use_gradient_checkpointing=False)
    config = peft.LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                             bias="none", target_modules=list(recipe.lora_targets))
    peft_model = peft.get_peft_model(model.llm, config)
    for name, parameter in model.named_parameters():
        if name.startswith(TRAINED_PREFIXES):
            parameter.requires_grad_(True)
    if gradient_checkpointing:
        model.llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return peft_model


def trained_parameters(model: LisaModel) -> Iterator[tuple[str, torch.nn.Parameter]]:
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)


@contextlib.contextmanager
def replaced_directory(directory: Path) -> Iterator[Path]:
    """A staging folder that replaces ``directory`` once complete: a kill mid-write leaves the old one whole."""
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    yield staging
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)


def write_adapter(directory: Path, peft_model: peft.PeftModel, model: LisaModel, info: dict, name: str) -> None:
    """The adapter files of the spec into ``directory`` (``name``: the adapter's name in its info file)."""
    peft_model.save_pretrained(str(directory), save_embedding_layers=False)
    trained = {checkpoint_key(key): parameter.detach().cpu().contiguous()
               for key, parameter in model.named_parameters() if key.startswith(TRAINED_PREFIXES)}
    save_file(trained, str(directory / adapter_files.TRAINED_WEIGHTS))
    info = {"format": adapter_files.FORMAT, "name": name, **info,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    (directory / adapter_files.DESCRIPTION).write_text(json.dumps(info, indent=2) + "\n")


def read_adapter_weights(directory: Path, peft_model: peft.PeftModel, model: LisaModel) -> None:
    """Puts an adapter directory's LoRA and trained-module tensors back into the model (resume)."""
    result = peft.set_peft_model_state_dict(peft_model, load_file(str(directory / adapter_files.LORA_WEIGHTS)))
    if result.unexpected_keys:
        raise CheckpointError(f"{directory}: LoRA tensors {result.unexpected_keys[:4]} do not fit this model")
    by_key = {checkpoint_key(n): p for n, p in model.named_parameters() if n.startswith(TRAINED_PREFIXES)}
    tensors = load_file(str(directory / adapter_files.TRAINED_WEIGHTS))
    if set(tensors) != set(by_key):
        raise CheckpointError(f"{directory / adapter_files.TRAINED_WEIGHTS} holds other modules than this run trains")
    with torch.no_grad():
        for key, tensor in tensors.items():
            by_key[key].copy_(tensor)


def check_samples(samples: list[Sample], tokenizer: LisaTokenizer, progress: bool) -> None:
    """Reads every sample once before the first step; one DatasetError naming every bad sample."""
    problems = []
    for sample in tqdm(samples, desc="Checking samples", unit="sample", disable=not progress):
        try:
            sample.load()
            answer_ids(tokenizer, sample)
        except DatasetError as error:
            problems.append(str(error))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetError(f"{len(problems)} of {len(samples)} samples cannot be trained on:\n  {shown}{more}")


def validate(model: LisaModel, tokenizer: LisaTokenizer, cache: FeatureCache, samples: list[Sample],
             max_new_tokens: int, progress: bool = False) -> dict:
    """gIoU / cIoU of free-run answers, as ``lisa-ros eval`` scores them (a negative's truth is empty, so
    it scores 1 only when refused); also the positives' gIoU and the negatives refused, which tell the
    masks' quality from the refusals'."""
    was_training = model.training
    model.eval()
    pairs, positives, refused = [], [], 0
    for sample in tqdm(samples, desc="Validating", unit="sample", disable=not progress, leave=False):
        image, masks = sample.load()
        predicted, _ = predict_mask(model, tokenizer, cache.get(str(sample.image), image), sample.instruction,
                                    max_new_tokens)
        pairs.append(metrics.intersection_union(predicted, masks.any(0)))
        if sample.negative:
            refused += not predicted.any()
        else:
            positives.append(pairs[-1])
    model.train(was_training)
    negatives = len(pairs) - len(positives)
    return {"gIoU": round(metrics.giou(pairs), 6), "cIoU": round(metrics.ciou(pairs), 6), "samples": len(pairs),
            "positive_gIoU": round(metrics.giou(positives), 6) if positives else None,
            "negatives": negatives, "negatives_refused": refused}


class Trainer:
    """One fine-tuning run into ``out``: ``train()`` returns 0, or INTERRUPTED after a Ctrl-C (saved)."""

    def __init__(self, dataset_dir: Path, out: Path, recipe: Recipe, options: RunOptions, resume: bool = False,
                 base: Base | None = None):
        problems = recipe.problems()
        if options.precision not in TRAINING_PRECISIONS:
            problems.append(f"precision must be one of {TRAINING_PRECISIONS}, got {options.precision!r}")
        if problems:
            raise ValueError("; ".join(problems))
        self.out, self.recipe, self.options = Path(out), recipe, options
        self.resume_dir = self.out / "resume"
        if self.resume_dir.exists() and not resume:
            raise FileExistsError(f"{self.out} holds an unfinished or finished run. Fix: pass --resume to continue it, "
                                  f"or choose another output folder")
        if resume and not self.resume_dir.exists():
            raise FileNotFoundError(f"--resume: {self.resume_dir} does not exist (nothing to resume)")
        self.train_samples = load_split(dataset_dir, "train")
        self.val_samples = load_split(dataset_dir, "val") if (Path(dataset_dir) / "val.jsonl").is_file() else []
        if not self.train_samples:
            raise DatasetError(f"{dataset_dir}/train.jsonl has no samples")
        # Bad data is refused before the (for a 7B, minutes long) model load.
        tokenizer = base.tokenizer if base else LisaTokenizer.from_directory(
            resolve_checkpoint(options.model, **options.hub))
        check_samples(self.train_samples + self.val_samples, tokenizer, options.progress)
        self.base = base or load_base(options)
        self.model, self.tokenizer = self.base.model, self.base.tokenizer
        self.peft_model = add_lora(self.model, recipe, quantized=options.precision in QUANTIZED_PRECISIONS,
                                   gradient_checkpointing=options.gradient_checkpointing)
        self.parameters = [p for _, p in trained_parameters(self.model)]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=recipe.lr, betas=recipe.betas,
                                           weight_decay=recipe.weight_decay)
        micro_batches = math.ceil(len(self.train_samples) / recipe.batch_size)
        self.steps_per_epoch = math.ceil(micro_batches / recipe.grad_accumulation)
        self.total_steps = self.steps_per_epoch * recipe.epochs
        self.warmup_steps = (recipe.warmup_steps if recipe.warmup_steps is not None
                             else min(100, math.ceil(self.total_steps / 10)))
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, self.warmup_steps, self.total_steps)
        self.cache = FeatureCache(self.model, options.feature_cache_mb * 2 ** 20)
        self.step = 0
        self.validated_epochs = -1  # -1: not even the base
        self.best: dict | None = None
        self.history: list[dict] = []
        self._stop = False
        if resume:
            self._load_state()

    # -- the run ---------------------------------------------------------------------------

    def train(self) -> int:
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        try:
            return self._train()
        finally:
            signal.signal(signal.SIGINT, previous)

    def _on_interrupt(self, signum, frame) -> None:
        """First Ctrl-C: stop after this step, saved; a second one stops at once (losing the step)."""
        self._stop = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logger.warning("interrupted: stopping after the current step (Ctrl-C again to stop now, unsaved)")

    def _train(self) -> int:
        if self.validated_epochs < 0:
            self._validate(0)
        writer = self._tensorboard()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="Fine-tuning", unit="step",
                   disable=not self.options.progress)
        try:
            # An epoch whose steps are done but whose validation is not (Ctrl-C in between) is run again: its
            # steps are skipped, its validation is not.
            for epoch in range(min(self.step // self.steps_per_epoch, self.validated_epochs), self.recipe.epochs):
                for index, micro_batches in enumerate(self._epoch_steps(epoch)):
                    if epoch * self.steps_per_epoch + index < self.step:
                        continue  # done before the resume point
                    row = self._optimizer_step(micro_batches, epoch)
                    self._log(row, writer)
                    bar.update()
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    if self._stop:
                        self._save_state()
                        return INTERRUPTED
                    if self.options.save_every and self.step % self.options.save_every == 0:
                        self._save_state()
                if self.validated_epochs < epoch + 1:
                    self._validate(epoch + 1)
                    self._save_state()
                    if self._stop:
                        return INTERRUPTED
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        self._write_final()
        return 0

    def _epoch_steps(self, epoch: int) -> list[list[list[Sample]]]:
        """The epoch's optimizer steps, each a list of micro-batches; the order depends on (seed, epoch) only."""
        generator = torch.Generator().manual_seed(self.recipe.seed * 100_003 + epoch)
        order = torch.randperm(len(self.train_samples), generator=generator).tolist()
        size, accumulation = self.recipe.batch_size, self.recipe.grad_accumulation
        batches = [[self.train_samples[i] for i in order[at:at + size]] for at in range(0, len(order), size)]
        return [batches[at:at + accumulation] for at in range(0, len(batches), accumulation)]

    def _optimizer_step(self, micro_batches: list[list[Sample]], epoch: int) -> dict:
        tick = time.perf_counter()
        self.model.train()
        parts = {"loss": 0.0, "ce": 0.0, "bce": 0.0, "dice": 0.0}
        for batch in micro_batches:
            examples = [make_example(self.model, self.tokenizer, self.cache, sample) for sample in batch]
            losses = teacher_forced_losses(self.model, self.tokenizer.seg_id, examples, self.recipe.loss_weights)
            (losses.total / len(micro_batches)).backward()
            for name, value in _parts(losses).items():
                parts[name] += value / len(micro_batches)
        torch.nn.utils.clip_grad_norm_(self.parameters, self.recipe.clip_grad)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"step": self.step, "epoch": epoch + 1, **parts, "lr": lr, "seconds": time.perf_counter() - tick}

    def _validate(self, epoch: int) -> None:
        """Scores epoch ``epoch`` (0: the base); keeps the adapter when its gIoU is the best so far."""
        self.validated_epochs = epoch
        if not self.val_samples:
            return
        scores = validate(self.model, self.tokenizer, self.cache, self.val_samples, self.options.max_new_tokens,
                          self.options.progress)
        entry = {"epoch": epoch, "step": self.step, **scores}
        self.history.append(entry)
        logger.info("validation after epoch %d: gIoU %.4f, cIoU %.4f", epoch, scores["gIoU"], scores["cIoU"])
        if epoch > 0 and (self.best is None or scores["gIoU"] > self.best["gIoU"]):
            self.best = entry
            self._write_adapter(self.out / "adapter", entry)

    def _write_final(self) -> None:
        last = self.history[-1] if self.history and self.history[-1]["epoch"] == self.recipe.epochs else None
        self._write_adapter(self.out / "last", last)
        if not self.val_samples:  # nothing to choose by: the deployable adapter is the last
            self._write_adapter(self.out / "adapter", None)

    def _write_adapter(self, directory: Path, validation: dict | None) -> None:
        """Named after the run (OUT's name): the node reports "<model>+<name>"."""
        with replaced_directory(directory) as staging:
            self._write_adapter_files(staging, validation, self.out.name)

    def _write_adapter_files(self, directory: Path, validation: dict | None, name: str) -> None:
        info = {
            "base": self.base.name, "base_identity": weights_identity(self.base.checkpoint_dir),
            "recipe": {**dataclasses.asdict(self.recipe), "warmup_steps": self.warmup_steps,
                       "total_steps": self.total_steps, "precision": self.options.precision},
            "validation": None if validation is None else {k: validation[k] for k in ("gIoU", "cIoU", "epoch")},
            "base_validation": next(({k: e[k] for k in ("gIoU", "cIoU")} for e in self.history if e["epoch"] == 0),
                                    None),
            "train_samples": len(self.train_samples), "step": self.step,
        }
        write_adapter(directory, self.peft_model, self.model, info, name)

    # -- logs ------------------------------------------------------------------------------

    def _log(self, row: dict, writer) -> None:
        path = self.out / "log.csv"
        new = not path.exists()
        with path.open("a", newline="") as handle:
            out = csv.DictWriter(handle, LOG_FIELDS)
            if new:
                out.writeheader()
            out.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if writer is not None:
            for name in ("loss", "ce", "bce", "dice", "lr"):
                writer.add_scalar(f"train/{name}", row[name], row["step"])

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional: the CSV log is always written
            return None
        # purge_step drops events an interrupted run logged after its last resume point
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step or None)

    # -- resume ----------------------------------------------------------------------------

    def _save_state(self) -> None:
        with replaced_directory(self.resume_dir) as staging:
            self._write_state(staging)

    def _write_state(self, directory: Path) -> None:
        self._write_adapter_files(directory, None, self.out.name)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                   directory / "optimizer.pt")
        state = {"step": self.step, "validated_epochs": self.validated_epochs, "best": self.best,
                 "history": self.history, "recipe": dataclasses.asdict(self.recipe),
                 "train_samples": [s.id for s in self.train_samples]}
        (directory / "trainer_state.json").write_text(json.dumps(state, indent=2))

    def _load_state(self) -> None:
        state = json.loads((self.resume_dir / "trainer_state.json").read_text())
        recipe = json.loads(json.dumps(dataclasses.asdict(self.recipe)))  # tuples as JSON lists
        if state["recipe"] != recipe or state["train_samples"] != [s.id for s in self.train_samples]:
            raise ValueError(f"{self.resume_dir} was trained with another recipe or training set; resume with the "
                             f"same options and dataset, or start a new output folder")
        read_adapter_weights(self.resume_dir, self.peft_model, self.model)
        saved = torch.load(self.resume_dir / "optimizer.pt", weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"]:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        self.step, self.validated_epochs = state["step"], state["validated_epochs"]
        self.best, self.history = state["best"], state["history"]
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Drops rows an interrupted run logged after its last resume point."""
        path = self.out / "log.csv"
        if not path.exists():
            return
        with path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= self.step]
        with path.open("w", newline="") as handle:
            out = csv.DictWriter(handle, LOG_FIELDS)
            out.writeheader()
            out.writerows(rows)


def _parts(losses: Losses) -> dict[str, float]:
    return {name: float(getattr(losses, "total" if name == "loss" else name).detach()) for name in
            ("loss", "ce", "bce", "dice")}


def merged_output(out: Path, checkpoint_dir: Path) -> Path:
    """``--merge``: the best adapter merged into the base, in the released layout (``lisa_ros.model.adapter``)."""
    merged = out / "merged"
    adapter_files.write_merged_checkpoint(checkpoint_dir, out / "adapter", merged)
    return merged
