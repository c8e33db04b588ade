"""`lisa-ros doctor`, with each problem forced on this CPU machine: the real checks on real files, a real
bitsandbytes kernel, real rclpy publishers over the loopback DDS. The GPU-only checks take their numbers as
arguments and are fed forced values (unverified on a real GPU here)."""
from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from lisa_ros.tools import cli, doctor
from lisa_ros.tools.doctor import FAIL, GB, OK, SKIP, WARN, Settings

REPO = Path(__file__).resolve().parents[2]


def _settings(**parameters) -> Settings:
    return Settings({key.replace("__", "."): value for key, value in parameters.items()}, "/image")


def _levels(findings, check):
    return [f.level for f in findings if f.check == check]


def _one(findings, check, level):
    found = [f for f in findings if f.check == check and f.level == level]
    assert found, [f for f in findings if f.check == check]
    return found[0]


def test_params_file_sections_and_overrides_merge_as_the_node_gets_them(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    compressed: false\n    model:\n      device: cuda\n"
                      "/robot/lisa_node:\n  ros__parameters:\n    model:\n      precision: bf16\n"
                      "other_node:\n  ros__parameters:\n    compressed: true\n")
    args = _parse(["doctor", str(params), "--device", "cpu", "-p", "compressed=true",
                              "--image-topic", "camera/image_raw"])
    settings = doctor.settings_from_args(args)
    assert settings.parameters == {"compressed": True, "model.device": "cpu", "model.precision": "bf16"}
    assert settings.compressed and settings.model("path") == "xinlai/LISA-7B-v1"  # the engine's default
    assert settings.image_topic == "/camera/image_raw" and args.wait == 3.0


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser.add_subparsers().add_parser("doctor"))
    return parser.parse_args(argv)



@pytest.mark.parametrize("precision", ["int4", "int8"])
def test_torchao_matmul_really_runs_on_the_cpu(precision):
    pytest.importorskip("torchao")
    finding = doctor.check_torchao(precision, "cpu")
    assert finding.level == OK and f"one {precision} matmul ran on cpu" in finding.message


def test_torchao_failures_name_the_other_backend():
    def old_gpu(precision, device, backend):
        raise RuntimeError("model.quantization torchao ... need compute capability 8.0 or newer")

    failed = doctor.check_torchao("int4", "cuda", run=old_gpu)
    assert failed.level == FAIL and "compute capability 8.0" in failed.message
    assert "model.quantization bitsandbytes" in failed.fix
    wrong = doctor.check_torchao("int8", "cuda", run=lambda precision, device, backend: 1.0)
    assert wrong.level == FAIL and "wrong" in wrong.message
    assert doctor.check_torchao("bf16", "cuda", run=old_gpu).level == SKIP


def test_model_checks_run_the_chosen_backend(tiny_lisa_checkpoint):
    pytest.importorskip("torchao")
    findings = doctor.model_checks(_settings(model__path=str(tiny_lisa_checkpoint), model__device="cpu",
                                             model__precision="int4", model__quantization="torchao"))
    assert _levels(findings, "torchao") == [OK] and not _levels(findings, "bitsandbytes")

# ------------------------------------------------------------------------------------- torch, CUDA, GPU

def test_device_cuda_without_cuda_fails_with_the_fix(tiny_lisa_checkpoint):
    torch = pytest.importorskip("torch")
    assert not torch.cuda.is_available()  # this machine: the finding below is the real one
    findings = doctor.model_checks(_settings(model__path=str(tiny_lisa_checkpoint), model__device="cuda",
                                             model__precision="int4"))
    cuda = _one(findings, "cuda", FAIL)
    assert "sees no CUDA device" in cuda.message and "CUDA build of torch" in cuda.fix
    assert _levels(findings, "bitsandbytes") == [SKIP]
    assert "needs about" in _one(findings, "memory", SKIP).message  # the estimate is still given


def test_cuda_index_beyond_the_visible_gpus_fails():
    finding = doctor.check_cuda("cuda:2", True, 2, "2.x")
    assert finding.level == FAIL and "cuda:0 .. cuda:1" in finding.fix
    assert doctor.check_cuda("cuda:1", True, 2, "2.x").level == OK


def test_compute_capability_against_the_torch_build():
    server = ["sm_80", "sm_86", "sm_90"]
    assert _levels(doctor.check_compute_capability((8, 7), server, "fp16", "Orin"), "gpu") == [OK]  # sm_86 cubin runs
    missing = doctor.check_compute_capability((8, 7), ["sm_90"], "fp16", "Orin")
    assert missing[0].level == FAIL and "sm_87" in missing[0].message and "JetPack" in missing[0].fix
    assert _levels(doctor.check_compute_capability((12, 0), ["sm_90a", "compute_90"], "fp16", "next"), "gpu") == [OK]
    assert doctor.check_compute_capability((12, 0), ["sm_90a", "sm_100"], "fp16", "next")[0].level == FAIL
    assert doctor.check_compute_capability((7, 0), ["sm_75", "sm_80"], "fp16", "V100")[0].level == FAIL
    old = doctor.check_compute_capability((7, 5), ["sm_75"], "bf16", "T4")
    assert [f.level for f in old] == [OK, WARN] and "fp16" in old[1].fix


def test_estimates_match_the_published_13b_memory_figures():
    """The reference's README (13B): 16-bit ~30 GB, 8-bit ~16 GB, 4-bit ~9 GB of weights; ours add activations."""
    sizes = doctor.KNOWN_CHECKPOINTS["xinlai/LISA-13B-llama2-v1"][0]
    for precision, published in (("fp16", 30), ("int8", 16), ("int4", 9)):
        estimate = doctor.estimate_memory(sizes, precision, "cuda").total_bytes / GB
        assert published <= estimate <= 1.3 * published, (precision, estimate)
    seven = doctor.estimate_memory(doctor.KNOWN_CHECKPOINTS["xinlai/LISA-7B-v1"][0], "int4", "cuda")
    assert 6 < seven.total_bytes / GB < 10 and "CLIP ViT-L, SAM ViT-H" in seven.explanation


def test_parameter_counts_equal_the_checkpoints_tensors(tiny_lisa_checkpoint):
    """The counts from config.json against the tensors the loader reads from the (tiny) checkpoint."""
    from lisa_ros.model.checkpoint import find_weight_files, read_tensors

    sizes, problem = doctor.checkpoint_sizes(_settings(), tiny_lisa_checkpoint)
    assert problem is None and sizes.tiny and sizes.vision_tower == "../clip-vit-tiny"
    linears = others = 0
    for path in find_weight_files(tiny_lisa_checkpoint).files:
        for key, tensor in read_tensors(path):
            if key.startswith("model.visual_model.") or key.endswith("rotary_emb.inv_freq"):
                continue
            if key.startswith("model.layers.") and key.endswith("_proj.weight"):
                linears += tensor.numel()
            else:
                others += tensor.numel()
    assert doctor.llama_parameter_counts(sizes.sizes) == (linears, others)


def test_memory_verdicts_and_their_fixes():
    estimate = doctor.estimate_memory(doctor.KNOWN_CHECKPOINTS["xinlai/LISA-7B-v1"][0], "fp16", "cuda")
    need = estimate.total_bytes
    assert doctor.check_memory(need + GB, need + 2 * GB, estimate, "cuda", "fp16").level == OK
    small = doctor.check_memory(6 * GB, 8 * GB, estimate, "cuda (8 GB)", "fp16")
    assert small.level == FAIL and "int4" in small.fix
    busy = doctor.check_memory(2 * GB, 80 * GB, estimate, "cuda", "fp16")
    assert busy.level == FAIL and "other processes" in busy.fix
    int4 = doctor.estimate_memory(doctor.KNOWN_CHECKPOINTS["xinlai/LISA-7B-v1"][0], "int4", "cuda")
    assert "more memory" in doctor.check_memory(4 * GB, 6 * GB, int4, "cuda", "int4").fix


# ------------------------------------------------------------------------------------------- bitsandbytes

@pytest.mark.parametrize("precision", ["int4", "int8"])
def test_quantized_matmul_really_runs_on_the_cpu(precision):
    pytest.importorskip("bitsandbytes")
    finding = doctor.check_bitsandbytes(precision, "cpu", "x86_64")
    assert finding.level == OK and f"one {precision} matmul ran on cpu" in finding.message


def test_a_failing_kernel_on_aarch64_names_jetson_and_the_bitsandbytes_issue():
    pytest.importorskip("bitsandbytes")

    def jetson_kernel(precision, device):
        raise RuntimeError("CUDA error: named symbol not found")

    finding = doctor.check_bitsandbytes("int4", "cuda", "aarch64", run=jetson_kernel)
    assert finding.level == FAIL and "named symbol not found" in finding.message
    assert "sm_87" in finding.fix and "#1930" in finding.fix and "COMPUTE_CAPABILITY=87" in finding.fix
    assert "#1930" not in doctor.check_bitsandbytes("int4", "cuda", "x86_64", run=jetson_kernel).fix
    wrong = doctor.check_bitsandbytes("int4", "cuda", "x86_64", run=lambda precision, device: 1.0)
    assert wrong.level == FAIL and "wrong" in wrong.message
    assert doctor.check_bitsandbytes("fp16", "cuda", "aarch64", run=jetson_kernel).level == SKIP


# ------------------------------------------------------------------------------------------------ weights

def _copy_checkpoint(source: Path, tmp_path: Path) -> Path:
    shutil.copytree(source.parent, tmp_path / "copy")
    return tmp_path / "copy" / source.name


def test_incomplete_local_checkpoints_fail_naming_the_file(tiny_lisa_checkpoint, tmp_path):
    checkpoint = _copy_checkpoint(tiny_lisa_checkpoint, tmp_path)
    complete, folder = doctor.check_checkpoint(_settings(model__path=str(checkpoint)), offline=True)
    assert complete.level == OK and folder == checkpoint
    (checkpoint / "tokenizer.model").unlink()
    finding, _ = doctor.check_checkpoint(_settings(model__path=str(checkpoint)), offline=True)
    assert finding.level == FAIL and "tokenizer.model" in finding.message and finding.fix
    shard = sorted(checkpoint.glob("pytorch_model-*.bin"))[0]
    shard.unlink()
    shutil.copy(tiny_lisa_checkpoint / "tokenizer.model", checkpoint)
    finding, _ = doctor.check_checkpoint(_settings(model__path=str(checkpoint)), offline=True)
    assert finding.level == FAIL and shard.name in finding.message
    finding, _ = doctor.check_checkpoint(_settings(model__path=str(tmp_path / "nowhere")), offline=True)
    assert finding.level == FAIL and "does not exist" in finding.message


def test_the_whole_model_check_reports_a_missing_file_once_and_a_bad_config(tiny_lisa_checkpoint, tmp_path):
    checkpoint = _copy_checkpoint(tiny_lisa_checkpoint, tmp_path)
    (checkpoint / "tokenizer.model").unlink()
    settings = _settings(model__path=str(checkpoint), model__device="cpu", model__precision="fp32")
    findings = doctor.model_checks(settings)
    assert _levels(findings, "params") == [OK]  # configure's path problem is the weights check's line
    assert "tokenizer.model" in _one(findings, "weights", FAIL).message
    assert _levels(findings, "memory") == [OK]  # config.json is still read for the estimate
    (checkpoint / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    bad = doctor.model_checks(settings)
    assert any("not LISA" in f.message for f in bad if f.check == "weights" and f.level == FAIL)
    assert "configure would fail" in _one(doctor.model_checks(_settings(
        model__path=str(tiny_lisa_checkpoint), model__device="cpu", model__precision="fp16", max_queue=0)),
        "params", FAIL).message


def test_incomplete_clip_folder_fails(tiny_lisa_checkpoint, tmp_path):
    checkpoint = _copy_checkpoint(tiny_lisa_checkpoint, tmp_path)
    assert doctor.check_vision_tower(_settings(), checkpoint, "../clip-vit-tiny", offline=True).level == OK
    for weights in (checkpoint.parent / "clip-vit-tiny").glob("*.safetensors"):
        weights.unlink()
    finding = doctor.check_vision_tower(_settings(), checkpoint, "../clip-vit-tiny", offline=True)
    assert finding.level == FAIL and "clip-vit-tiny" in finding.message


def test_hub_id_not_cached_fails_offline_and_tells_the_download_size_online(tmp_path, monkeypatch):
    settings = _settings(model__path="xinlai/LISA-7B-v1", model__cache_dir=str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    findings = doctor.model_checks(settings)
    offline = [f for f in findings if f.check == "weights"]
    assert [f.level for f in offline] == [FAIL, FAIL]  # the checkpoint and its CLIP
    assert "offline mode is on" in offline[0].message and "hf download xinlai/LISA-7B-v1" in offline[0].fix
    assert "openai/clip-vit-large-patch14" in offline[1].message
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    online, _ = doctor.check_checkpoint(settings, offline=False)
    assert online.level == WARN and "download about 16.0 GB" in online.message


def test_a_complete_hub_cache_entry_is_found_offline(tiny_lisa_checkpoint, tmp_path):
    """A real cache layout (refs/main -> snapshots/<commit>/), as `hf download` leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--lisa-test--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_lisa_checkpoint, repo / "snapshots" / commit)
    settings = _settings(model__path="lisa-test/tiny", model__cache_dir=str(tmp_path / "hub"))
    finding, folder = doctor.check_checkpoint(settings, offline=True)
    assert finding.level == OK and "Hugging Face cache" in finding.message and folder == repo / "snapshots" / commit


# ------------------------------------------------------------------------------------ numpy, OpenCV, ROS

def _dist_packages(tmp_path: Path, version: str, layout: str = "dist-info") -> Path:
    folder = tmp_path / f"dist-packages-{version}-{layout}"
    if layout == "dist-info":
        (folder / f"numpy-{version}.dist-info").mkdir(parents=True)
        (folder / f"numpy-{version}.dist-info" / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: numpy\nVersion: {version}\n")
    else:  # Debian's python3-numpy layout
        (folder / f"numpy-{version}.egg-info").mkdir(parents=True)
        (folder / f"numpy-{version}.egg-info" / "PKG-INFO").write_text(
            f"Metadata-Version: 2.1\nName: numpy\nVersion: {version}\n")
    return folder


@pytest.mark.parametrize("layout", ["dist-info", "egg-info"])
def test_numpy_2_over_a_ros_built_for_numpy_1_fails(tmp_path, layout):
    folder = _dist_packages(tmp_path, "1.26.4", layout)
    assert doctor.distribution_version(folder, "numpy") == "1.26.4"
    clash = doctor.check_numpy("2.4.6", "/venv/numpy", "1.26.4", folder)
    assert clash.level == FAIL and "1.26.4" in clash.message and "numpy<2" in clash.fix
    assert doctor.check_numpy("1.26.4", "/usr/lib/python3/dist-packages/numpy", "1.26.4", folder).level == OK
    newer = _dist_packages(tmp_path, "2.1.0")
    assert doctor.check_numpy("2.4.6", "/venv/numpy", doctor.distribution_version(newer, "numpy"), newer).level == OK


def test_the_whole_run_reads_the_system_numpy_when_ros_is_sourced(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "SYSTEM_DIST_PACKAGES", _dist_packages(tmp_path, "1.26.4"))
    import numpy

    findings = doctor.ros_python_checks({"ROS_DISTRO": "jazzy"})
    first = findings[0]
    if int(numpy.__version__.split(".")[0]) >= 2:
        assert first.level == FAIL and "1.26.4" in first.message
    else:
        assert first.level == OK
    assert "ROS_DISTRO unset" in doctor.ros_python_checks({})[0].message


def test_two_cv2_on_the_path_warn(tmp_path):
    pip_cv2, system_cv2 = tmp_path / "venv", tmp_path / "dist-packages"
    (pip_cv2 / "cv2").mkdir(parents=True)
    (pip_cv2 / "cv2" / "__init__.py").write_text("")
    system_cv2.mkdir()
    (system_cv2 / f"cv2{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"")  # apt's cv2 is one .so
    locations = doctor.cv2_locations([str(pip_cv2), str(tmp_path / "empty"), str(system_cv2)])
    assert [Path(p).parent for p in locations] == [pip_cv2 / "cv2", system_cv2]
    findings = doctor.check_opencv(locations, ["opencv-python-headless 5.0"])
    assert [f.level for f in findings] == [OK, WARN] and "shadows" in findings[1].message
    assert doctor.check_opencv([], [])[0].level == FAIL
    both = doctor.check_opencv(locations[:1], ["opencv-python 4.10", "opencv-python-headless 5.0"])
    assert [f.level for f in both] == [OK, WARN]


# ---------------------------------------------------------------------------------------------------- DDS

def test_dds_environment(tmp_path):
    loopback = doctor.check_network({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", "ROS_DOMAIN_ID": "7",
                                     "FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_localhost.xml")})
    assert "loopback addresses only" in _one(loopback, "dds", WARN).message
    assert FAIL not in _levels(loopback, "dds")
    missing = doctor.check_network({"FASTRTPS_DEFAULT_PROFILES_FILE": str(tmp_path / "none.xml")})
    assert "does not exist" in _one(missing, "dds", FAIL).message
    assert _one(doctor.check_network({"ROS_DOMAIN_ID": "robot"}), "dds", FAIL).fix
    local = doctor.check_network({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in _one(local, "dds", WARN).message
    assert "deprecated" in _one(doctor.check_network({"ROS_LOCALHOST_ONLY": "1"}), "dds", WARN).message
    network = tmp_path / "cyclone.xml"
    network.write_text("<CycloneDDS><Domain><General><Interfaces><NetworkInterface name='eth0'/></Interfaces>"
                       "</General></Domain></CycloneDDS>")
    assert _levels(doctor.check_network({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp",
                                         "CYCLONEDDS_URI": f"file://{network}"}), "dds") == [OK] * 4


# --------------------------------------------------------------------------------- camera topic (real DDS)

def _topic() -> str:
    return f"/doctor_{uuid.uuid4().hex[:8]}/image_raw"


def _params_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n" + "".join(f"    {line}\n" for line in text.splitlines()))
    return path


@pytest.mark.ros
def test_camera_topic_absent_fails_and_lists_the_image_topics(ros_probe):
    from sensor_msgs.msg import Image

    other = _topic()
    ros_probe.node.create_publisher(Image, other, 1)
    absent = _one(doctor.check_camera(Settings({}, _topic()), wait_s=6.0), "camera", FAIL)
    assert "no publisher" in absent.message and "remap" in absent.fix
    assert other in absent.message  # the image topics it can see are named


@pytest.mark.ros
def test_best_effort_camera_against_a_reliable_override_fails(ros_probe, tmp_path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    topic = _topic()
    ros_probe.node.create_publisher(Image, topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    params = _params_file(tmp_path, f"qos_overrides:\n  {topic}:\n    subscription:\n      reliability: reliable")
    reliable = Settings(doctor.read_params_file(params), topic)
    finding = _one(doctor.check_camera(reliable, wait_s=10.0), "camera", FAIL)
    assert "incompatible QoS" in finding.message and "best_effort" in finding.message
    assert "qos_overrides" in finding.fix
    default = doctor.check_camera(Settings({}, topic), wait_s=10.0)  # the node's own best effort subscription
    assert _levels(default, "camera") == [OK]


@pytest.mark.ros
def test_wrong_message_type_on_the_camera_topic_fails(ros_probe):
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import String

    text_topic, compressed_topic = _topic(), _topic()
    ros_probe.node.create_publisher(String, text_topic, 1)
    ros_probe.node.create_publisher(CompressedImage, compressed_topic, 1)
    wrong = _one(doctor.check_camera(Settings({}, text_topic), wait_s=10.0), "camera", FAIL)
    assert "std_msgs/msg/String" in wrong.message and "sensor_msgs/msg/Image" in wrong.message
    compressed = _one(doctor.check_camera(Settings({}, compressed_topic), wait_s=10.0), "camera", FAIL)
    assert "compressed: true" in compressed.fix


@pytest.mark.ros
def test_compressed_camera_is_enough_when_compressed_is_on(ros_probe):
    from sensor_msgs.msg import CompressedImage

    topic = _topic()
    ros_probe.node.create_publisher(CompressedImage, topic + "/compressed", 1)
    findings = doctor.check_camera(Settings({"compressed": True}, topic), wait_s=6.0)
    assert sorted(_levels(findings, "camera")) == [OK, WARN]  # the raw topic is missing, the compressed one is there


@pytest.mark.ros
def test_clean_run_exits_0(ros_probe, tiny_lisa_checkpoint, tmp_path, capsys, monkeypatch):
    """config/lisa_cpu.yaml with the tiny checkpoint and a camera publishing: no error, through the CLI."""
    from sensor_msgs.msg import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    topic = _topic()
    ros_probe.node.create_publisher(Image, topic, 1)
    status = cli.main(["doctor", str(REPO / "config" / "lisa_cpu.yaml"), "--model-path", str(tiny_lisa_checkpoint),
                       "--image-topic", topic, "--wait", "10", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["ok"] and report["errors"] == 0, report
    levels = {(f["check"], f["level"]) for f in report["findings"]}
    assert {("weights", OK), ("memory", OK), ("camera", OK), ("params", OK), ("numpy", OK)} <= levels
    status = cli.main(["doctor", str(REPO / "config" / "lisa_cpu.yaml"), "--model-path", str(tiny_lisa_checkpoint),
                       "--image-topic", topic, "--wait", "10", "--device", "cuda"])
    text = capsys.readouterr().out
    assert status == 1 and "FAIL  cuda" in text and "fix: install a CUDA build of torch" in text


@pytest.mark.parametrize("ros_distro", [None, "jazzy"])
def test_doctor_imports_and_checks_without_rclpy(tmp_path, ros_distro):
    """No rclpy: the ROS checks skip themselves with a line saying so, the rest still runs; with a ROS sourced
    (ROS_DISTRO set) that this Python cannot import, that is an error."""
    import subprocess
    import sys

    blocker = tmp_path / "rclpy"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('rclpy hidden by the test')")
    env = {key: value for key, value in os.environ.items() if key != "ROS_DISTRO"}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", HF_HUB_OFFLINE="1", **(
        {"ROS_DISTRO": ros_distro} if ros_distro else {}))
    done = subprocess.run([sys.executable, "-P", "-m", "lisa_ros.tools.cli", "doctor", "-p", "engine=plumbing",
                           "--json"], env=env, capture_output=True, text=True, timeout=120)
    report = json.loads(done.stdout)
    skipped = [f for f in report["findings"] if f["level"] == SKIP]
    assert any(f["check"] == "camera" and "rclpy cannot be imported" in f["message"] for f in skipped), report
    ros = [f for f in report["findings"] if f["check"] == "ros"]
    assert [f["level"] for f in ros] == ([FAIL] if ros_distro else []), report
    assert done.returncode == (1 if report["errors"] else 0) and report["errors"] >= len(ros)
