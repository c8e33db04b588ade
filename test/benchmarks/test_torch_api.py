"""benchmarks/torch_api.py: every torch name the GPU check's code uses, with the keywords it passes, is in the
oldest torch it supports (read from that version's wheel sources, committed as benchmarks/torch_api_<v>.json);
and the reading itself follows imports, stubs and torch's dynamic exports, and reports what is missing."""
from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.append(str(BENCHMARKS))

import torch_api  # noqa: E402


def test_the_gpu_checks_torch_calls_exist_in_the_oldest_supported_torch():
    surface = json.loads(torch_api.SURFACE.read_text())
    assert surface["torch"] == torch_api.OLDEST_TORCH
    used = torch_api.used_names(torch_api.code_files())
    assert {"torch.compile", "torch.cuda.max_memory_allocated",
            "torch.nn.functional.scaled_dot_product_attention"} <= set(used)
    assert torch_api.mismatches(surface, used) == []


def test_gpu_quick_refuses_a_torch_older_than_the_oldest_supported():
    script = (BENCHMARKS / "gpu_quick.sh").read_text()
    major, minor = torch_api.OLDEST_TORCH.split(".")[:2]
    assert f"have >= ({major}, {minor})" in script and f"needs torch >= {major}.{minor}" in script


def test_used_names_follow_import_aliases_and_collect_keywords(tmp_path):
    code = tmp_path / "code.py"
    code.write_text("import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
                    "x = torch.cuda.max_memory_allocated(device=d)\n"
                    "y = F.scaled_dot_product_attention(q, k, v, attn_mask=m)\n"
                    "layer = nn.Linear(1, 2, bias=False)\nz = torch.float16\nw = other.cuda.thing(device=d)\n")
    assert torch_api.used_names([code]) == {
        "torch.cuda.max_memory_allocated": {"device"},
        "torch.nn.functional.scaled_dot_product_attention": {"attn_mask"},
        "torch.nn.Linear": {"bias"}, "torch.float16": set()}


def test_lookup_follows_imports_stubs_and_dynamic_exports_and_names_what_is_missing(tmp_path):
    wheel = tmp_path / "torch-9.1.0-cp312-cp312-macosx_11_0_arm64.whl"
    sources = {
        "torch/__init__.py": "from torch._tensor import Tensor\nfrom .cuda import *\n__version__ = '9.1.0'\n"
                             "def compile(model, *, backend='inductor', mode=None): ...\n",
        "torch/_tensor.py": "class Tensor:\n    def __init__(self, data): ...\n",
        "torch/_C/_VariableFunctions.pyi": "def zeros(size, *, dtype=None): ...\n",
        "torch/cuda/__init__.py": "from .memory import max_memory_allocated\ndef synchronize(device=None): ...\n",
        "torch/cuda/memory.py": "def max_memory_allocated(device=None, **kwargs): ...\n",
    }
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in sources.items():
            archive.writestr(name, text)
    used = {"torch.compile": {"mode"}, "torch.zeros": {"dtype"}, "torch.Tensor": set(), "torch.__version__": set(),
            "torch.cuda.max_memory_allocated": {"anything"}, "torch.cuda.synchronize": {"device"},
            "torch.synchronize": set()}
    surface = torch_api.surface(wheel, used | {"torch.nothing": set()})
    assert surface["torch"] == "9.1.0"
    assert {name: (entry["defined"], entry["parameters"]) for name, entry in surface["names"].items()} == {
        "torch.compile": (True, ["backend", "mode", "model"]), "torch.zeros": (True, ["dtype", "size"]),
        "torch.Tensor": (True, ["data"]), "torch.__version__": (True, None),
        "torch.cuda.max_memory_allocated": (True, ["**", "device"]), "torch.cuda.synchronize": (True, ["device"]),
        "torch.synchronize": (True, ["device"]),  # torch/__init__.py's star import of .cuda
        "torch.nothing": (False, None)}
    assert torch_api.mismatches(surface, used) == []
    problems = torch_api.mismatches(surface, {"torch.compile": {"fullgraph"}, "torch.cuda.graphs": set(),
                                              "torch.zeros": set(), "torch.nothing": set()})
    assert [re.sub(r":.*", "", p) for p in problems] == ["torch.compile", "torch.cuda.graphs", "torch.nothing"]
    assert "takes no keyword fullgraph" in problems[0] and "not in the surface file" in problems[1]
    assert "not defined in torch 9.1.0" in problems[2]
