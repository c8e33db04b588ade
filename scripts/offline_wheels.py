#!/usr/bin/env python3
"""Builds a folder of wheels that installs lisa_ros on a machine with no internet.

Run on a connected machine (any OS/architecture with pip); copy the folder to the robot and
install with `LISA_WHEELS=DIR scripts/setup.sh` (pip --no-index --find-links DIR). The folder
holds binary wheels only, for one target Python version and platform, at the lock's versions
(the ones CI tests), so the robot installs exactly what was downloaded.

    scripts/offline_wheels.py wheels/                       # this machine's Python and platform
    scripts/offline_wheels.py wheels-jetson/ --python-version 3.10 \
        --platform manylinux_2_35_aarch64 --no-torch --no-ros   # JetPack 6 (its own torch, apt ROS)
    scripts/offline_wheels.py wheels-gpu/ --gpu-check --python-version 3.12 \
        --platform manylinux_2_28_x86_64      # benchmarks/gpu_quick.sh on a CUDA image with its own torch

Stdlib only: it runs before anything is installed. After the download it checks that every
wheel fits the target (Python tag, ABI, platform) and prints the folder's size and file count.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "requirements"
# What scripts/setup.sh installs, in its order: runtime (with core.txt), 4-bit (bitsandbytes, torchao), the
# replay/eval tools, fine-tuning, the tests and the linter (not with --runtime), ROS 2's PyPI wheels (not with an
# apt ROS).
SETS = ("runtime", "int4", "torchao", "tools", "finetune", "test", "lint", "ros")
# What benchmarks/gpu_quick.sh imports (the engine, both 4-bit backends, peft for its QLoRA step) ...
GPU_CHECK_SETS = ("runtime", "int4", "torchao", "finetune")
# ... on a CUDA image with its own PyTorch: what such an image (an NVIDIA PyTorch container, this project's
# GPU machines) already holds is left out (stand-ins while resolving), so the folder is the packages it lacks or
# holds too old: transformers, bitsandbytes, torchao, segment-anything (just under 60 MB for x86_64), and peft
# (0.5 MB). The GPU check's
# install names whatever the machine turns out to lack; --provided gives another list.
GPU_CHECK_PROVIDED = ("numpy", "opencv-python-headless", "pillow", "pyyaml", "huggingface-hub", "tokenizers",
                      "safetensors", "accelerate", "sentencepiece", "tqdm", "regex", "typer", "packaging", "psutil")
LOCK = "lock"
# A target that brings its own torch (or another provided package) gets a stand-in of this local version
# while resolving, so nothing pulls PyPI's torch (and its CUDA wheels) into the folder; the stand-in is removed
# after.
PROVIDED_LABEL = "provided.by.target"
# Pure-Python packages that PyPI serves as source only, by the set that needs them (empy: rosidl's
# code generator): built here at the lock's version into a py3-none-any wheel, which fits every target.
SOURCE_ONLY = {"empy": "ros"}


def this_platform() -> str:
    """This machine's manylinux tag (manylinux_<glibc major>_<minor>_<arch>); pip also accepts the older ones."""
    libc, version = platform.libc_ver()
    if sys.platform != "linux" or libc != "glibc":
        raise SystemExit("not a glibc Linux: give the target's --platform (e.g. manylinux_2_39_x86_64)")
    major, minor = version.split(".")[:2]
    return f"manylinux_{major}_{minor}_{platform.machine()}"


def requirement_files(leave_out: set[str], requirements: Path | None = None,
                      sets: tuple[str, ...] = SETS) -> list[Path]:
    """The requirement files the target installs, in setup's order; a missing one is an error."""
    names = [name for name in sets if name not in leave_out]
    files = [(requirements or REQUIREMENTS) / f"{name}.txt" for name in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"missing requirement files: {', '.join(missing)}")
    return files


def locked_version(lock: Path, name: str) -> str:
    """The lock's exact version of `name` (the lock is name==version lines)."""
    wanted = _normalise(name)
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if match and _normalise(match.group(1)) == wanted:
            return match.group(2)
    raise SystemExit(f"{lock} has no exact pin for {name}")


def pinned_names(lines: list[str]) -> dict[str, str]:
    """name -> the whole line, for each requirement line of a constraints file."""
    names = {}
    for line in lines:
        requirement = line.split("#", 1)[0].strip()
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", requirement)
        if match:
            names[_normalise(match.group(0))] = requirement
    return names


def write_constraints(scratch: Path, lock: Path | None, target: list[Path],
                      provided: set[str]) -> tuple[list[Path], dict[str, str]]:
    """pip's constraint files: the lock less what the target pins, and the target's pins (what the target
    provides, normalised names, left out of both); and the versions the target names for what it provides."""
    pins: dict[str, str] = {}
    for path in target:
        pins.update(pinned_names(path.read_text(encoding="utf-8").splitlines()))
    versions = {}
    for name in provided:
        pin = re.search(r"===?\s*([^\s;,]+)", pins.pop(name, ""))
        if pin:
            versions[name] = pin.group(1).split("+")[0]
    files = []
    if lock is not None:
        kept = [line for name, line in pinned_names(lock.read_text(encoding="utf-8").splitlines()).items()
                if name not in pins and name not in provided]
        files.append(scratch / "lock.txt")
        files[-1].write_text("\n".join(kept) + "\n", encoding="utf-8")
    if pins:
        files.append(scratch / "target.txt")
        files[-1].write_text("\n".join(pins.values()) + "\n", encoding="utf-8")
    return files, versions


def write_stand_in_wheel(folder: Path, name: str, version: str) -> Path:
    """A dependency-free wheel that satisfies `name==version` while resolving (never installed)."""
    dist = f"{_normalise(name).replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    info = f"{dist}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: lisa_ros offline_wheels\n"
                         "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as wheel:
        for arcname, text in files.items():
            wheel.writestr(arcname, text)
        wheel.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"]))
    return path


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel_name(filename: str) -> tuple[str, str, list[str], list[str], list[str]]:
    """(name, version, python tags, abi tags, platform tags) of a wheel file name (PEP 427)."""
    parts = filename[: -len(".whl")].split("-")
    if not filename.endswith(".whl") or len(parts) not in (5, 6):
        raise ValueError(f"not a wheel file name: {filename}")
    name, version, python, abi, plat = parts[0], parts[1], parts[-3], parts[-2], parts[-1]
    return name, version, python.split("."), abi.split("."), plat.split(".")


def wheel_fits(filename: str, python_version: str, platforms: list[str]) -> bool:
    """Whether a wheel installs on CPython `python_version` on one of `platforms` (manylinux tags)."""
    _, _, pythons, abis, plats = parse_wheel_name(filename)
    major, minor = (int(x) for x in python_version.split(".")[:2])
    cp = f"cp{major}{minor}"

    def python_ok(tag: str) -> bool:
        if tag in (cp, f"py{major}", f"py{major}{minor}"):
            return True
        older = re.fullmatch(rf"(?:cp|py){major}(\d+)", tag)
        return bool(older) and int(older.group(1)) <= minor and ("abi3" in abis or "none" in abis)

    abi_ok = any(a in (cp, "abi3", "none") for a in abis)
    return any(python_ok(p) for p in pythons) and abi_ok and any(
        _platform_ok(p, target) for p in plats for target in platforms)


def _platform_ok(tag: str, target: str) -> bool:
    if tag == "any" or tag == target:
        return True
    want = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", target)
    if not want:
        return False
    glibc, arch = (int(want.group(1)), int(want.group(2))), want.group(3)
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    have = re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014|manylinux_(\d+)_(\d+))_(\w+)", tag)
    if not have or have.group(4) != arch:
        return False
    needs = legacy.get(have.group(1)) or (int(have.group(2)), int(have.group(3)))
    return needs <= glibc


def pip_platforms(targets: list[str]) -> list[str]:
    """Every platform tag a target accepts: pip before 24 does not widen manylinux_2_N itself."""
    tags: list[str] = []
    for target in targets:
        tags.append(target)
        match = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", target)
        if match:
            glibc, arch = int(match.group(1)), match.group(2)
            tags += [f"manylinux_2_{n}_{arch}" for n in range(glibc - 1, 4, -1)]
            tags += [f"manylinux{legacy}_{arch}" for legacy, since in (("2014", 17), ("2010", 12), ("1", 5))
                     if glibc >= since]
    return list(dict.fromkeys(tags))


def misfits(folder: Path, python_version: str, platforms: list[str]) -> list[str]:
    """The folder's files that are not wheels for the target."""
    bad = []
    for path in sorted(folder.iterdir()):
        try:
            ok = wheel_fits(path.name, python_version, platforms)
        except ValueError:
            ok = False
        if not ok:
            bad.append(path.name)
    return bad


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("output", type=Path, help="the wheel folder (made if missing; kept wheels are reused)")
    parser.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                        help="the target's Python, e.g. 3.12 (default: this one, %(default)s)")
    parser.add_argument("--platform", action="append", dest="platforms", metavar="TAG",
                        help="the target's platform tag, repeatable (default: this machine's, e.g. "
                             "manylinux_2_39_x86_64; Jetson JetPack 6: manylinux_2_35_aarch64; "
                             "Ubuntu 24.04 arm64: manylinux_2_39_aarch64)")
    parser.add_argument("--no-torch", action="store_true",
                        help="the target brings its own torch (Jetson, an NVIDIA container, conda): "
                             "no torch and none of its own dependencies in the folder")
    parser.add_argument("--torch-from", metavar="URL_OR_DIR",
                        help="also take torch from this index URL or wheel folder, e.g. "
                             "https://download.pytorch.org/whl/cpu for the CPU build (PyPI's Linux x86_64 "
                             "torch is the CUDA build with about 3 GB of nvidia-* wheels)")
    parser.add_argument("--gpu-check", action="store_true",
                        help="only what benchmarks/gpu_quick.sh needs on a CUDA machine with its own torch "
                             "(requirements/runtime, int4, torchao; implies --no-torch and --provided "
                             f"{','.join(GPU_CHECK_PROVIDED)})")
    parser.add_argument("--provided", action="append", metavar="NAME[,NAME...]",
                        help="distributions the target already has: stand-ins while resolving, none of them or "
                             "their own dependencies in the folder (the lock's version, or -c's); --provided '' "
                             "with --gpu-check: none but torch")
    parser.add_argument("--no-ros", action="store_true",
                        help="the target has ROS 2 from apt: leave out requirements/ros.txt")
    parser.add_argument("--no-int4", action="store_true",
                        help="leave out requirements/int4.txt (bitsandbytes): on a Jetson its PyPI wheels "
                             "import but fail at the first 4-bit kernel; build it there from source")
    parser.add_argument("--runtime", action="store_true",
                        help="the node's and tools' packages only, as `setup.sh --runtime` (no finetune / test / lint)")
    parser.add_argument("--no-lock", action="store_true",
                        help="resolve the ranges in requirements/ instead of the CI lock's versions, as "
                             "setup does for a venv layered on a system ROS / torch; with --constraint")
    parser.add_argument("--constraint", "-c", action="append", type=Path, default=[], metavar="FILE",
                        help="the target's own versions (e.g. numpy==1.26.4 of apt's python3-numpy, "
                             "torch==VERSION of a Jetson) for pip, repeatable; their torch line names the "
                             "version --no-torch stands in for")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        parser.error(f"--python-version wants MAJOR.MINOR such as 3.12, not {args.python_version!r}")
    if args.gpu_check:
        args.no_torch = True
    if args.no_torch and args.torch_from:
        parser.error("--torch-from makes no sense with --no-torch (or --gpu-check)")
    if args.provided is None:
        args.provided = list(GPU_CHECK_PROVIDED) if args.gpu_check else []
    else:
        args.provided = [name.strip() for value in args.provided for name in value.split(",") if name.strip()]
    args.platforms = args.platforms or [this_platform()]
    return args


def pip_download_command(args: argparse.Namespace, files: list[Path], constraints: list[Path],
                         find_links: list[str]) -> list[str]:
    """The one `pip download` that fills the folder: binary wheels for the target, lock versions."""
    command = [sys.executable, "-m", "pip", "download", "--dest", str(args.output),
               "--only-binary=:all:", "--implementation", "cp",
               "--python-version", args.python_version]
    for tag in pip_platforms(args.platforms):
        command += ["--platform", tag]
    for path in files:
        command += ["--requirement", str(path)]
    for path in constraints:
        command += ["--constraint", str(path)]
    for link in find_links:
        command += ["--find-links", link]
    if args.torch_from and args.torch_from.startswith(("http://", "https://")):
        command += ["--extra-index-url", args.torch_from]
    return command


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    leave_out = {name for name, flag in (("ros", args.no_ros), ("int4", args.no_int4)) if flag}
    if args.runtime:
        leave_out |= {"finetune", "test", "lint"}
    sets = GPU_CHECK_SETS if args.gpu_check else SETS
    files = requirement_files(leave_out, sets=sets)
    provided = {_normalise(name) for name in args.provided} | ({"torch"} if args.no_torch else set())
    lock = REQUIREMENTS / f"{LOCK}.txt"
    for path in [lock, *args.constraint]:
        if not path.is_file():
            raise SystemExit(f"missing {path}")
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "wheels"  # built and stand-in wheels, offered to pip beside the index
        local.mkdir()
        find_links = [str(local)]
        constraints, target_versions = write_constraints(Path(scratch), None if args.no_lock else lock,
                                                         args.constraint, provided)
        stand_ins = []
        if provided:
            pins = []
            for name in sorted(provided):
                version = f"{target_versions.get(name) or locked_version(lock, name)}+{PROVIDED_LABEL}"
                stand_ins.append(write_stand_in_wheel(local, name, version))
                pins.append(f"{name}=={version}")
            constraints.append(Path(scratch) / "provided.txt")
            constraints[-1].write_text("\n".join(pins) + "\n", encoding="utf-8")
        if args.torch_from and not args.torch_from.startswith(("http://", "https://")):
            find_links.append(args.torch_from)  # a folder of wheels
        chosen = set(sets) - leave_out
        for name in (name for name, needed_by in SOURCE_ONLY.items() if needed_by in chosen):
            build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(local),
                     f"{name}=={locked_version(lock, name)}"]
            print("$", " ".join(build), flush=True)
            subprocess.run(build, check=True)
        command = pip_download_command(args, files, constraints, find_links)
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
        for stand_in in stand_ins:
            (args.output / stand_in.name).unlink(missing_ok=True)
    bad = misfits(args.output, args.python_version, args.platforms)
    if bad:
        raise SystemExit(f"{len(bad)} files in {args.output} do not fit Python {args.python_version} on "
                         f"{', '.join(args.platforms)}: {', '.join(bad)}")
    wheels = sorted(args.output.iterdir())
    size = sum(p.stat().st_size for p in wheels)
    torch_wheels = [p.name for p in wheels if _normalise(parse_wheel_name(p.name)[0]) == "torch"]
    print(f"{args.output}: {len(wheels)} wheels, {size / 1e6:.1f} MB, for Python {args.python_version} on "
          f"{', '.join(args.platforms)} in {time.monotonic() - started:.0f} s; torch: "
          f"{', '.join(torch_wheels) or 'none (the target brings its own)'}")
    if args.gpu_check:
        print(f"on the GPU machine: bash benchmarks/gpu_quick.sh --wheels {os.path.abspath(args.output)}")
    else:
        print(f"install on the target: LISA_WHEELS={os.path.abspath(args.output)} scripts/setup.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
