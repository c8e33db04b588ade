"""requirements/*.txt declare what the code imports, where its code lives, as ranges; the CI lock
pins all of it with no local build label; both resolve from the public index alone.

The resolving tests ask pypi.org (as CI can): pip runs with no configuration file, no environment
variables (a machine's wheel folder, extra indexes and caps must not help) and reports what it
would install and from where."""
import ast
import json
import subprocess
import sys
import time
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"

# top-level import -> the distribution that provides it (ROS's own modules come from ROS, not pip)
DISTRIBUTIONS = {
    "numpy": "numpy", "cv2": "opencv-python-headless", "PIL": "pillow", "yaml": "pyyaml", "torch": "torch",
    "transformers": "transformers", "huggingface_hub": "huggingface-hub", "safetensors": "safetensors",
    "accelerate": "accelerate", "sentencepiece": "sentencepiece", "segment_anything": "segment-anything",
    "tqdm": "tqdm", "bitsandbytes": "bitsandbytes", "rosbags": "rosbags", "apsw": "apsw",
    "matplotlib": "matplotlib", "skimage": "scikit-image", "pytest": "pytest", "sklearn": "scikit-learn",
    "peft": "peft", "pycocotools": "pycocotools", "tensorboard": "tensorboard", "torchao": "torchao",
}
FROM_ROS = {"rclpy", "rcl_interfaces", "std_msgs", "sensor_msgs", "geometry_msgs", "visualization_msgs",
            "vision_msgs", "std_srvs", "lifecycle_msgs", "diagnostic_msgs", "builtin_interfaces", "action_msgs",
            "unique_identifier_msgs", "ament_index_python", "launch", "launch_ros"}
# the requirement files a subpackage's imports may come from (core.txt is `pip install .`)
ALLOWED = {"core": {"core"}, "model": {"core", "runtime", "int4", "torchao"},
           "tools": {"core", "runtime", "int4", "torchao", "tools"},
           "node": {"core", "runtime", "int4", "torchao", "tools"},
           "training": {"core", "runtime", "int4", "torchao", "tools", "finetune"}}
RANGES = ("core", "runtime", "int4", "torchao", "tools", "finetune", "test", "lint")
PYPI_FILES = "https://files.pythonhosted.org/"


def declared(name):
    """Distribution name -> Requirement for requirements/<name>.txt (without its -r includes)."""
    lines = (line.split("#")[0].strip() for line in (REQUIREMENTS / f"{name}.txt").read_text().splitlines())
    return {canonicalize_name(r.name): r for r in (Requirement(line) for line in lines if line and line[0] != "-")}


def third_party_imports(paths):
    roots = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("import_module", "find_spec")
                  and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                roots.add(node.args[0].value.split(".")[0])  # imported by name (segment_anything's modeling)
    return roots - set(sys.stdlib_module_names) - FROM_ROS - {"lisa_ros", "__future__"}


def lock():
    pins = {}
    for line in (REQUIREMENTS / "lock.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_each_subpackage_imports_only_what_its_requirement_files_declare():
    for package, files in ALLOWED.items():
        imports = third_party_imports((REPO / "lisa_ros" / package).rglob("*.py"))
        unknown = imports - set(DISTRIBUTIONS)
        assert not unknown, f"lisa_ros/{package} imports {unknown}: add them to DISTRIBUTIONS and a requirement file"
        available = set().union(*(declared(f) for f in files))
        missing = {DISTRIBUTIONS[m] for m in imports if m in DISTRIBUTIONS} - available
        assert not missing, f"lisa_ros/{package} imports {missing}, which none of {sorted(files)} declares"


def test_every_declared_runtime_distribution_is_imported():
    imported = {DISTRIBUTIONS[m] for m in third_party_imports((REPO / "lisa_ros").rglob("*.py")) if m in DISTRIBUTIONS}
    for name in ("core", "runtime", "int4", "torchao", "tools"):
        unused = set(declared(name)) - imported
        assert not unused, f"requirements/{name}.txt declares {unused}, which lisa_ros never imports"


def test_tests_import_only_declared_distributions():
    imports = third_party_imports(REPO.joinpath("test").rglob("*.py")) & set(DISTRIBUTIONS)
    available = set().union(*(declared(f) for f in RANGES))
    assert {DISTRIBUTIONS[m] for m in imports} <= available


def test_lock_pins_every_range_inside_it_with_no_local_label():
    pins = lock()
    local = {f"{name}=={version}" for name, version in pins.items() if "+" in version}
    assert not local, f"local build labels no public index serves: {local}"
    for name in RANGES + ("ros",):
        for dist, requirement in declared(name).items():
            assert dist in pins, f"{dist} (requirements/{name}.txt) is not in lock.txt"
            assert requirement.specifier.contains(Version(pins[dist]), prereleases=True), (
                f"lock.txt's {dist}=={pins[dist]} is outside requirements/{name}.txt's {requirement}")


def test_setup_py_extras_are_the_requirement_files():
    out = subprocess.run([sys.executable, "-c", (
        "import json, runpy, setuptools, sys; sys.argv = ['setup.py'];"
        "setuptools.setup = lambda **k: print(json.dumps([k['install_requires'], k['extras_require']]));"
        "runpy.run_path('setup.py')")], cwd=REPO, check=True, capture_output=True, text=True).stdout
    install_requires, extras = json.loads(out)
    as_strings = {name: sorted(str(r) for r in declared(name).values()) for name in RANGES}
    def normal(lines):
        return sorted(str(Requirement(line)) for line in lines)

    assert normal(install_requires) == as_strings["core"]
    assert {extra: normal(reqs) for extra, reqs in extras.items()} == {
        "model": as_strings["runtime"], "int4": as_strings["int4"], "torchao": as_strings["torchao"],
        "tools": as_strings["tools"],
        "finetune": as_strings["finetune"], "test": as_strings["test"], "lint": as_strings["lint"]}


def resolve_from_pypi(tmp_path, *args):
    """What pip would install for `args` from pypi.org alone: {name: version}, after checking the source."""
    report = tmp_path / "report.json"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), *args],
        cwd=REPO, env={"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"resolved {' '.join(args)} in {time.monotonic() - started:.0f} s")
    installs = json.loads(report.read_text())["install"]
    elsewhere = [i["download_info"]["url"] for i in installs if not i["download_info"]["url"].startswith(PYPI_FILES)]
    assert not elsewhere, f"resolved from outside the public index: {elsewhere}"
    versions = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}
    local = {f"{name}=={version}" for name, version in versions.items() if "+" in version}
    assert not local, f"local build labels: {local}"
    return versions


def test_ranges_resolve_from_the_public_index_alone(tmp_path):
    versions = resolve_from_pypi(tmp_path, *(f"-rrequirements/{name}.txt"
                                             for name in ("runtime", "int4", "torchao", "tools", "finetune")))
    assert {"peft", "torch", "transformers", "segment-anything", "numpy", "opencv-python-headless", "bitsandbytes",
            "torchao", "rosbags"} <= set(versions)


def test_lock_resolves_from_the_public_index_alone_and_is_complete(tmp_path):
    versions = resolve_from_pypi(tmp_path, "-rrequirements/lock.txt")
    assert versions == lock()
