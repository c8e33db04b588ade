"""scripts/offline_wheels.py: which wheels fit a target, and what a real `pip download` puts in the
folder, run against a local folder of small generated wheels with no index (no network).

The full path (public index, fresh clone, install with --no-index, the demo) is scripts/test_offline.sh,
a CI step: it downloads hundreds of MB.
"""
import importlib.util
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("offline_wheels", REPO / "scripts" / "offline_wheels.py")
offline_wheels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(offline_wheels)


def make_wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any", requires=()) -> Path:
    """A minimal valid wheel: metadata only, with Requires-Dist lines."""
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    path = folder / f"{dist}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", metadata)
        wheel.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


@pytest.mark.parametrize("filename, python, platform, fits", [
    ("numpy-2.4.6-cp312-cp312-manylinux_2_28_aarch64.whl", "3.12", "manylinux_2_39_aarch64", True),
    ("numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl", "3.12", "manylinux_2_39_aarch64", False),
    ("numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl", "3.12", "manylinux_2_39_aarch64", False),
    # JetPack 6 is glibc 2.35: a wheel built for 2.39 does not load there.
    ("x-1.0-cp310-cp310-manylinux_2_39_aarch64.whl", "3.10", "manylinux_2_35_aarch64", False),
    ("psutil-7.2.2-cp36-abi3-manylinux2014_aarch64.manylinux_2_17_aarch64.whl", "3.12", "manylinux_2_35_aarch64", True),
    ("hf_xet-1.8.0-cp38-abi3-manylinux_2_28_aarch64.whl", "3.12", "manylinux_2_39_aarch64", True),
    ("ruff-0.17.6-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", "3.12", "manylinux_2_39_aarch64", True),
    ("tzdata-2026.6-py2.py3-none-any.whl", "3.10", "manylinux_2_35_aarch64", True),
    ("x-1.0-cp313-cp313-manylinux_2_28_aarch64.whl", "3.12", "manylinux_2_39_aarch64", False),
    ("x-1.0-cp312-cp312-win_arm64.whl", "3.12", "manylinux_2_39_aarch64", False),
])
def test_wheel_fits_the_target_python_abi_and_platform(filename, python, platform, fits):
    assert offline_wheels.wheel_fits(filename, python, [platform]) is fits


def test_a_source_archive_in_the_folder_is_a_misfit(tmp_path):
    make_wheel(tmp_path, "good", "1.0")
    (tmp_path / "empy-4.2.1.tar.gz").write_bytes(b"")
    assert offline_wheels.misfits(tmp_path, "3.12", ["manylinux_2_39_x86_64"]) == ["empy-4.2.1.tar.gz"]


def test_arguments_default_to_this_python_and_refuse_contradictions():
    args = offline_wheels.parse_args(["out"])
    assert args.python_version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert args.platforms == [offline_wheels.this_platform()]
    assert args.platforms[0].startswith("manylinux_2_")
    assert not (args.no_torch or args.no_ros or args.no_int4 or args.runtime or args.no_lock)
    assert args.provided == []
    gpu = offline_wheels.parse_args(["out", "--gpu-check"])
    assert gpu.no_torch and gpu.provided == list(offline_wheels.GPU_CHECK_PROVIDED)
    assert offline_wheels.parse_args(["out", "--gpu-check", "--provided", ""]).provided == []
    assert offline_wheels.parse_args(["out", "--provided", "numpy,pillow", "--provided", "pyyaml"]).provided == [
        "numpy", "pillow", "pyyaml"]
    for bad in (["out", "--python-version", "3"], ["out", "--no-torch", "--torch-from", "https://x"],
                ["out", "--gpu-check", "--torch-from", "https://x"]):
        with pytest.raises(SystemExit):
            offline_wheels.parse_args(bad)


def test_requirement_sets_follow_the_target(tmp_path):
    for name in ("runtime", "tools", "finetune", "test", "lint", "ros", "int4", "torchao"):
        (tmp_path / f"{name}.txt").write_text("")
    def names(leave_out):
        return [p.stem for p in offline_wheels.requirement_files(leave_out, requirements=tmp_path)]
    assert names(set()) == ["runtime", "int4", "torchao", "tools", "finetune", "test", "lint", "ros"]
    assert names({"ros", "int4"}) == ["runtime", "torchao", "tools", "finetune", "test", "lint"]
    (tmp_path / "lint.txt").unlink()
    with pytest.raises(SystemExit, match="lint.txt"):
        offline_wheels.requirement_files({"ros"}, requirements=tmp_path)


def test_the_targets_pins_replace_the_locks_and_name_the_provided_torch(tmp_path):
    lock, target = tmp_path / "lock-in.txt", tmp_path / "robot.txt"
    lock.write_text("# the lock\nnumpy==2.4.6\ntorch==2.13.0\nscipy==1.17.1\n")
    target.write_text("numpy==1.26.4  # apt's python3-numpy\ntorch==2.5.0a0+872d972e41.nv24.08\n")
    (scratch := tmp_path / "scratch").mkdir()
    files, versions = offline_wheels.write_constraints(scratch, lock, [target], provided={"torch"})
    assert versions == {"torch": "2.5.0a0"}
    assert [f.read_text().split() for f in files] == [["scipy==1.17.1"], ["numpy==1.26.4"]]
    files, versions = offline_wheels.write_constraints(scratch, lock, [target], provided={"torch", "scipy"})
    assert versions == {"torch": "2.5.0a0"}  # scipy: the target names no version, the lock's pin is left out
    assert [f.read_text().split() for f in files] == [[], ["numpy==1.26.4"]]
    files, _ = offline_wheels.write_constraints(scratch, None, [target], provided=set())
    assert [f.read_text().splitlines() for f in files] == [["numpy==1.26.4", "torch==2.5.0a0+872d972e41.nv24.08"]]


def test_pip_download_takes_an_older_manylinux_wheel_for_a_newer_target(tmp_path):
    """pip < 24 takes a manylinux_2_39 target literally; the widened list lets it take a 2_17 wheel."""
    index = tmp_path / "index"
    index.mkdir()
    make_wheel(index, "native", "1.0", tag="cp312-cp312-manylinux_2_17_aarch64")
    command = [sys.executable, "-m", "pip", "download", "--isolated", "--no-index", "--find-links", str(index),
               "--dest", str(tmp_path / "out"), "--only-binary=:all:", "--implementation", "cp",
               "--python-version", "3.12", "native"]
    for tag in offline_wheels.pip_platforms(["manylinux_2_39_aarch64"]):
        command += ["--platform", tag]
    subprocess.run(command, check=True, capture_output=True)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["native-1.0-cp312-cp312-manylinux_2_17_aarch64.whl"]


@pytest.fixture
def local_project(tmp_path, monkeypatch):
    """requirements/ and an 'index' folder of generated wheels; pip sees only that folder."""
    index, requirements = tmp_path / "index", tmp_path / "requirements"
    index.mkdir()
    requirements.mkdir()
    make_wheel(index, "torch", "2.13.0", requires=["torch-only-dep"])
    make_wheel(index, "torch-only-dep", "1.0")
    make_wheel(index, "needs-torch", "1.0", requires=["torch>=2", "shared-dep"])
    make_wheel(index, "shared-dep", "1.0")
    make_wheel(index, "shared-dep", "2.0")
    make_wheel(index, "bnb", "1.0", requires=["torch"])
    make_wheel(index, "ros-thing", "1.0")
    make_wheel(index, "native", "1.0", tag="cp312-cp312-manylinux_2_28_aarch64")
    (requirements / "runtime.txt").write_text("needs-torch\n")
    (requirements / "int4.txt").write_text("bnb\n")
    for name in ("torchao", "tools", "finetune", "test", "lint"):
        (requirements / f"{name}.txt").write_text("")
    (requirements / "ros.txt").write_text("ros-thing\n")
    (requirements / "lock.txt").write_text("torch==2.13.0\nneeds-torch==1.0\nshared-dep==1.0\n")
    monkeypatch.setattr(offline_wheels, "REQUIREMENTS", requirements)
    monkeypatch.setattr(offline_wheels, "SOURCE_ONLY", {})
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return tmp_path


def folder(path: Path) -> set[str]:
    return {p.name.split("-")[0] for p in path.iterdir()}


def test_a_folder_with_torch_and_ros(local_project, capsys):
    out = local_project / "wheels"
    assert offline_wheels.main([str(out), "--python-version", "3.12", "--platform", "manylinux_2_39_aarch64"]) == 0
    assert folder(out) == {"needs_torch", "shared_dep", "torch", "torch_only_dep", "ros_thing", "bnb"}
    assert "shared_dep-1.0-py3-none-any.whl" in {p.name for p in out.iterdir()}  # the lock's, not the newest
    assert "6 wheels" in capsys.readouterr().out


def test_torch_from_a_folder_wins_over_the_index_at_the_locks_version(local_project):
    """2.13.0+cpu satisfies the lock's torch==2.13.0 and sorts above the index's 2.13.0."""
    cpu = local_project / "cpu"
    cpu.mkdir()
    make_wheel(cpu, "torch", "2.13.0+cpu", tag="cp312-cp312-manylinux_2_28_aarch64")
    out = local_project / "wheels"
    offline_wheels.main([str(out), "--python-version", "3.12", "--platform", "manylinux_2_39_aarch64",
                         "--no-ros", "--torch-from", str(cpu)])
    assert "torch-2.13.0+cpu-cp312-cp312-manylinux_2_28_aarch64.whl" in {p.name for p in out.iterdir()}
    assert folder(out) == {"needs_torch", "shared_dep", "torch", "bnb"}  # the CUDA build's dependency is not


def test_no_torch_leaves_out_torch_and_what_only_torch_needs(local_project):
    out = local_project / "wheels"
    offline_wheels.main([str(out), "--python-version", "3.12", "--platform", "manylinux_2_39_aarch64",
                         "--no-torch", "--no-ros", "--no-int4"])
    assert folder(out) == {"needs_torch", "shared_dep"}


def test_a_layered_target_gets_the_ranges_under_its_own_pins(local_project):
    """--no-lock -c: a Jetson's torch (a local NVIDIA build) stands in; the newest of the rest."""
    robot = local_project / "robot.txt"
    robot.write_text("torch==2.5.0a0+872d972e41.nv24.08\n")
    out = local_project / "wheels"
    offline_wheels.main([str(out), "--python-version", "3.10", "--platform", "manylinux_2_35_aarch64",
                         "--no-torch", "--no-ros", "--no-lock", "-c", str(robot)])
    assert {p.name for p in out.iterdir()} == {"needs_torch-1.0-py3-none-any.whl", "shared_dep-2.0-py3-none-any.whl",
                                               "bnb-1.0-py3-none-any.whl"}


def test_gpu_check_folder_is_the_engine_and_both_backends_less_what_the_target_provides(local_project, capsys):
    """benchmarks/gpu_quick.sh's folder: runtime + int4 + torchao only (no tools, no ROS), no torch and nothing
    only torch needs, and a provided distribution stands in (at the lock's version) instead of being downloaded."""
    requirements, index = local_project / "requirements", local_project / "index"
    (requirements / "torchao.txt").write_text("ao-kernels\n")
    make_wheel(index, "ao-kernels", "1.0", requires=["torch>=2"])
    (requirements / "tools.txt").write_text("native\n")
    out = local_project / "wheels"
    arguments = [str(out), "--gpu-check", "--python-version", "3.12", "--platform", "manylinux_2_39_aarch64"]
    offline_wheels.main([*arguments, "--provided", "shared-dep"])
    assert folder(out) == {"needs_torch", "bnb", "ao_kernels"}
    assert "bash benchmarks/gpu_quick.sh --wheels" in capsys.readouterr().out
    out = local_project / "wheels-2"
    offline_wheels.main([str(out), *arguments[1:], "--provided", ""])
    assert folder(out) == {"needs_torch", "shared_dep", "bnb", "ao_kernels"}
    (requirements / "torchao.txt").unlink()
    with pytest.raises(SystemExit, match="torchao.txt"):
        offline_wheels.main([str(local_project / "wheels-3"), *arguments[1:]])


def test_what_a_gpu_image_provides_is_pinned_in_the_lock():
    """The stand-ins take the lock's versions: a default provided name the lock lacks would stop the build."""
    pins = {canonicalize_name(line.split("==")[0])
            for line in (REPO / "requirements" / "lock.txt").read_text().splitlines() if "==" in line}
    assert {canonicalize_name(name) for name in offline_wheels.GPU_CHECK_PROVIDED} <= pins


def test_a_wheel_for_another_platform_in_the_folder_fails_the_build(local_project):
    (local_project / "requirements" / "tools.txt").write_text("native\n")
    out = local_project / "wheels"
    offline_wheels.main([str(out), "--python-version", "3.12", "--platform", "manylinux_2_39_aarch64"])
    (out / "stray-1.0-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    with pytest.raises(SystemExit, match="stray-1.0-cp312-cp312-manylinux_2_28_x86_64.whl"):
        offline_wheels.main([str(out), "--python-version", "3.12", "--platform", "manylinux_2_39_aarch64"])


def test_the_documented_commands_are_valid_arguments():
    """Each `scripts/offline_wheels.py ...` line of docs/robot-setup.md's Offline robots section parses."""
    section = (REPO / "docs" / "robot-setup.md").read_text().split("## Offline robots", 1)[1].split("\n## ", 1)[0]
    text = section.replace("\\\n", " ")
    commands = [line.split("scripts/offline_wheels.py", 1)[1].split("#", 1)[0]
                for line in text.splitlines() if line.startswith("scripts/offline_wheels.py")]
    assert len(commands) >= 4
    for command in commands:
        args = offline_wheels.parse_args(shlex.split(command))
        assert args.output == Path("wheels")
    assert "LISA_WHEELS=/path/to/wheels scripts/setup.sh" in section


def test_the_documented_gpu_check_commands_are_valid_arguments():
    """The offline GPU check's folder command, as benchmarks/README.md and docs/benchmarks.md give it, parses."""
    commands = [line.split("scripts/offline_wheels.py", 1)[1].split("#", 1)[0]
                for doc in ("benchmarks/README.md", "docs/benchmarks.md")
                for line in (REPO / doc).read_text().splitlines() if "scripts/offline_wheels.py gpu-wheels" in line]
    assert len(commands) == 2
    for command in commands:
        args = offline_wheels.parse_args(shlex.split(command))
        assert args.gpu_check and args.no_torch and args.python_version == "3.12"
