"""`lisa-ros finetune` on a tiny checkpoint and a small shapes task: what trains, what it writes, resume,
Ctrl-C, bad data, QLoRA. Real transformers / peft / segment_anything / bitsandbytes code paths, CPU fp32."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

os.environ["HF_HUB_OFFLINE"] = "1"

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from lisa_ros.model.adapter import read_adapter  # noqa: E402
from lisa_ros.model.loading import checkpoint_key, parameter_name  # noqa: E402
from lisa_ros.tools import cli  # noqa: E402
from lisa_ros.training.dataset import DatasetError, load_split  # noqa: E402
from lisa_ros.training.forward import FeatureCache, make_example, teacher_forced_losses  # noqa: E402
from lisa_ros.training.shapes import KINDS, write_shapes_task  # noqa: E402
from lisa_ros.training.trainer import Recipe, RunOptions, Trainer, add_lora, load_base, validate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LAYERS = 2  # the tiny LLM's decoder layers


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Untrained LLM: what trains does not depend on it, and it never answers [SEG] (validation tests use that)."""
    from lisa_ros.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), layout="7b", seed=0, train_steps=0).lisa_dir


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_shapes_task(tmp_path_factory.mktemp("shapes"), train_scenes=5, val_scenes=2, negative_rate=0.5,
                             seed=1)


def finetune(dataset, checkpoint, out, *extra):
    return cli.main(["finetune", str(dataset), "--model", str(checkpoint), "--out", str(out), "--no-progress",
                     "--epochs", "2", "--batch-size", "1", "--grad-accumulation", "2", *extra])


def is_trained(name: str) -> bool:
    """The recipe, restated from LISA's training code: LoRA on the LLM's q_proj/v_proj, four modules in full."""
    lora = ".lora_A." in name or ".lora_B." in name
    if lora:
        return name.startswith("llm.model.layers.") and (".q_proj." in name or ".v_proj." in name)
    return name.startswith(("llm.lm_head.", "llm.model.embed_tokens.", "text_hidden_fcs.",
                            "visual_model.mask_decoder."))


def one_backward(checkpoint, dataset, gradient_checkpointing=False):
    base = load_base(RunOptions(model=str(checkpoint), progress=False))
    model = base.model
    add_lora(model, Recipe(), quantized=False, gradient_checkpointing=gradient_checkpointing)
    torch.manual_seed(5)
    with torch.no_grad():  # LoRA B starts at zero, which would zero LoRA A's gradient
        for name, parameter in model.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0, 0.02)
    samples = load_split(dataset, "train")
    batch = [next(s for s in samples if not s.negative), next(s for s in samples if s.negative)]
    cache = FeatureCache(model, 1 << 30)
    model.train()
    losses = teacher_forced_losses(model, base.tokenizer.seg_id,
                                   [make_example(model, base.tokenizer, cache, s) for s in batch])
    losses.total.backward()
    return model, losses


def test_one_step_reaches_exactly_the_parameters_lisa_trains(checkpoint, dataset):
    model, losses = one_backward(checkpoint, dataset)
    assert all(float(v.detach()) > 0 for v in (losses.ce, losses.bce, losses.dice))
    names = [name for name, _ in model.named_parameters()]
    lora = [n for n in names if ".lora_" in n]
    assert len(lora) == LAYERS * 2 * 2  # layers x (q, v) x (A, B): none in CLIP, the projector or SAM
    trained = {n for n in names if is_trained(n)}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trained
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    # LISA asks SAM for one mask: the other outputs' hypernetworks and the IoU head are trainable
    # (the whole decoder is) but no loss reaches them, in LISA as here.
    unused = {n for n in trained if n.startswith(("visual_model.mask_decoder.iou_prediction_head.",
                                                  *(f"visual_model.mask_decoder.output_hypernetworks_mlps.{i}."
                                                    for i in (1, 2, 3))))}
    assert unused and with_grad == trained - unused
    untouched = [n for n in names if n.startswith(("vision_tower.", "mm_projector.", "visual_model.image_encoder.",
                                                   "visual_model.prompt_encoder."))
                 or (n.startswith("llm.model.layers.") and ".lora_" not in n)]
    assert untouched and not set(untouched) & with_grad


def test_gradient_checkpointing_gives_the_same_gradients(checkpoint, dataset):
    plain, plain_losses = one_backward(checkpoint, dataset)
    checkpointed, losses = one_backward(checkpoint, dataset, gradient_checkpointing=True)
    torch.testing.assert_close(losses.total, plain_losses.total)
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_finetune_writes_the_adapter_of_the_spec(checkpoint, dataset, tmp_path):
    out = tmp_path / "kitchen-v1"
    assert finetune(dataset, checkpoint, out, "--merge") == 0
    adapter = out / "adapter"
    read_adapter(adapter).check_base(checkpoint)  # the node's reader takes it as the base's adapter
    assert {"adapter_config.json", "adapter_model.safetensors", "trained_modules.safetensors",
            "lisa_ros_adapter.json"} <= {p.name for p in adapter.iterdir()}
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"], config["bias"]) == (8, 16, 0.05, "none")
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert set(load_file(adapter / "adapter_model.safetensors")) == {
        f"base_model.model.model.layers.{i}.self_attn.{proj}.lora_{ab}.weight"
        for i in range(LAYERS) for proj in ("q_proj", "v_proj") for ab in "AB"}
    trained = load_file(adapter / "trained_modules.safetensors")
    assert {"lm_head.weight", "model.embed_tokens.weight", "model.text_hidden_fcs.0.0.weight",
            "model.visual_model.mask_decoder.output_upscaling.0.weight"} <= set(trained)
    names = {parameter_name(key) for key in trained}  # keyed like a released checkpoint
    assert all(is_trained(n) for n in names) and {checkpoint_key(n) for n in names} == set(trained)
    base = load_base(RunOptions(model=str(checkpoint), progress=False)).model.state_dict()
    assert not torch.equal(trained["model.visual_model.mask_decoder.output_upscaling.0.weight"],
                           base["visual_model.mask_decoder.output_upscaling.0.weight"])
    info = json.loads((adapter / "lisa_ros_adapter.json").read_text())
    assert info["format"] == "lisa_ros.adapter/1" and info["name"] == "kitchen-v1"
    assert info["base"] == checkpoint.name and len(info["base_identity"]) == 12
    assert info["recipe"]["lora_r"] == 8 and info["train_samples"] == len(load_split(dataset, "train"))
    assert set(info["validation"]) == {"gIoU", "cIoU", "epoch"}
    assert (out / "last" / "adapter_model.safetensors").is_file()
    with (out / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    steps = 2 * -(-len(load_split(dataset, "train")) // 2)  # epochs x ceil(samples / (1 x 2))
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    assert set(rows[0]) == {"step", "epoch", "loss", "ce", "bce", "dice", "lr", "seconds"}
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    merged = load_base(RunOptions(model=str(out / "merged"), progress=False)).model.state_dict()  # the plain loader
    assert torch.equal(merged["llm.lm_head.weight"], trained["lm_head.weight"].bfloat16().float())  # base's dtype


def test_an_existing_run_is_not_overwritten_without_resume(checkpoint, dataset, tmp_path, capsys):
    (tmp_path / "run" / "resume").mkdir(parents=True)
    assert finetune(dataset, checkpoint, tmp_path / "run") == 2
    assert "--resume" in capsys.readouterr().err


def test_validation_scores_free_run_answers_like_the_eval(checkpoint, dataset):
    """The untrained LLM never answers [SEG]: every mask is empty, so a negative scores 1 and a positive 0."""
    base = load_base(RunOptions(model=str(checkpoint), progress=False))
    samples = load_split(dataset, "train") + load_split(dataset, "val")
    scores = validate(base.model, base.tokenizer, FeatureCache(base.model, 1 << 30), samples, max_new_tokens=8)
    negatives = sum(s.negative for s in samples)
    assert 0 < negatives < len(samples)
    assert scores["gIoU"] == pytest.approx(negatives / len(samples)) and scores["cIoU"] == 0.0
    assert (scores["positive_gIoU"], scores["negatives"], scores["negatives_refused"]) == (0.0, negatives, negatives)


def tensors(directory):
    """An adapter directory's LoRA and trained-module tensors."""
    return {key: value for name in ("adapter_model.safetensors", "trained_modules.safetensors")
            for key, value in load_file(directory / name).items()}


def test_ctrl_c_then_resume_ends_where_an_uninterrupted_run_ends(checkpoint, dataset, tmp_path):
    assert finetune(dataset, checkpoint, tmp_path / "straight") == 0
    out = tmp_path / "interrupted"
    command = [sys.executable, "-P", "-m", "lisa_ros.tools.cli", "finetune", str(dataset), "--model", str(checkpoint),
               "--out", str(out), "--no-progress", "--epochs", "2", "--batch-size", "1", "--grad-accumulation", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "log.csv").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # after the first optimizer step, mid-training
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-3000:]
    assert "--resume" in err
    saved = json.loads((out / "resume" / "trainer_state.json").read_text())
    total = len(list(csv.DictReader((tmp_path / "straight" / "log.csv").open())))
    assert 1 <= saved["step"] < total
    assert not (out / "last").exists()

    assert finetune(dataset, checkpoint, out, "--resume") == 0
    straight, resumed = tensors(tmp_path / "straight" / "last"), tensors(out / "last")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
    read = [{k: r[k] for k in ("step", "loss", "lr")} for r in csv.DictReader((out / "log.csv").open())]
    assert read == [{k: r[k] for k in ("step", "loss", "lr")}
                    for r in csv.DictReader((tmp_path / "straight" / "log.csv").open())]


def broken_copy(dataset, tmp_path):
    """The dataset with an empty mask, a mask of the wrong size and an answer whose [SEG] count is wrong."""
    copy = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(dataset), str(copy)], check=True)
    lines = [json.loads(line) for line in (copy / "train.jsonl").read_text().splitlines()]
    positives = [line for line in lines if not line["negative"]]
    cv2.imwrite(str(copy / positives[0]["masks"][0]), np.zeros((120, 160), np.uint8))
    cv2.imwrite(str(copy / positives[1]["masks"][0]), np.full((60, 80), 255, np.uint8))
    positives[2]["answer"] = "Sure, [SEG] and [SEG]."
    (copy / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return copy, [p["id"] for p in positives[:3]]


def test_bad_data_is_refused_before_the_first_step_naming_each_sample(checkpoint, dataset, tmp_path, capsys):
    broken, bad_ids = broken_copy(dataset, tmp_path)
    with pytest.raises(DatasetError) as error:
        Trainer(broken, tmp_path / "out", Recipe(), RunOptions(model=str(checkpoint), progress=False))
    message = str(error.value)
    assert "3 of" in message and all(repr(i) in message for i in bad_ids)
    assert "is empty" in message and "80x60" in message and "2 [SEG]" in message
    assert finetune(broken, checkpoint, tmp_path / "cli") == 2
    assert bad_ids[0] in capsys.readouterr().err
    assert not (tmp_path / "cli" / "log.csv").exists()


def test_qlora_int4_trains_a_step_on_the_cpu(checkpoint, dataset, tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    trainer = Trainer(dataset, tmp_path / "qlora", Recipe(epochs=1, grad_accumulation=1, warmup_steps=0),
                      RunOptions(model=str(checkpoint), precision="int4", progress=False))
    q_proj = trainer.model.llm.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    assert not q_proj.base_layer.weight.requires_grad
    quantized = q_proj.base_layer.weight.data.clone()
    lora_b = q_proj.lora_B["default"].weight.detach().clone()
    row = trainer._optimizer_step(trainer._epoch_steps(0)[0], epoch=0)
    assert np.isfinite(row["loss"]) and row["bce"] > 0
    assert not torch.equal(q_proj.lora_B["default"].weight, lora_b)  # the adapter learned
    assert torch.equal(q_proj.base_layer.weight.data, quantized)  # the 4-bit base did not move
    assert trainer.model.llm.lm_head.weight.dtype == torch.float32


def test_shapes_task_is_a_valid_training_set(dataset):
    train, val = load_split(dataset, "train"), load_split(dataset, "val")
    assert not {s.group for s in train} & {s.group for s in val}
    by_instruction = {text: kind.name for kind in KINDS for text in kind.instructions}
    for sample in train + val:
        image, masks = sample.load()  # refuses empty or mis-sized masks
        assert image.shape == (120, 160, 3) and len(masks) == (0 if sample.negative else 1)
        kind = by_instruction[sample.instruction]
        assert (f"_no_{kind}" in sample.id) == sample.negative and sample.id.endswith(kind)
        if not sample.negative:  # the mask covers pixels of the kind's colour
            rgb = next(k.rgb for k in KINDS if k.name == kind)
            assert np.abs(image[masks[0]].astype(int) - rgb).max() <= 15


def test_make_shapes_task_command_writes_a_loadable_set_and_repeats_itself(tmp_path, capsys):
    for name in ("a", "b"):
        assert cli.main(["make-shapes-task", str(tmp_path / name), "--train-scenes", "3", "--val-scenes", "2"]) == 0
    assert "finetune" in capsys.readouterr().out
    assert len(load_split(tmp_path / "a", "train")) >= 3 and len(load_split(tmp_path / "a", "val")) >= 2
    for path in sorted((tmp_path / "a").rglob("*.*")):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes(), path.name
