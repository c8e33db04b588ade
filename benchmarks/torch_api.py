"""The torch API the GPU check calls, checked against an older torch's sources without installing it.

benchmarks/gpu_quick.sh runs on a machine's own torch. The oldest one it supports (README) cannot be installed
here (PyPI's Linux torch is a 2 GB CUDA build), but every torch wheel, whatever its platform, carries the same
Python sources and type stubs (``.py`` / ``.pyi``). This module finds, by reading code (AST), every
``torch.<...>`` name the GPU check's code uses and the keywords it passes, and looks each up in a wheel's sources:
defined (a function, class, constant or module, also through imports and the stubs of torch's C functions) and,
for a call, whether that version's signature takes those keywords. Tensor methods (``x.float()``) are not
named statically and are not covered.

    python -P benchmarks/torch_api.py torch-2.11.0-cp312-cp312-macosx_11_0_arm64.whl   # writes the surface file

writes ``benchmarks/torch_api_<version>.json`` (name -> parameter names, or null where the stubs give none);
test/benchmarks/test_torch_api.py checks that the code's names and keywords are all in it.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The oldest torch the GPU check supports: torchao 0.17+ loads its kernels from torch 2.11 on (older: Python only),
# and the GPU check checks it first (benchmarks/gpu_quick.sh).
OLDEST_TORCH = "2.11.0"
SURFACE = REPO / "benchmarks" / f"torch_api_{OLDEST_TORCH}.json"
# What benchmarks/gpu_quick.sh runs: its benchmark scripts and the engine they load.
GPU_CHECK_CODE = ("benchmarks/engine_vs_reference.py", "benchmarks/sam_attention.py", "benchmarks/models.py",
                  "benchmarks/common.py", "lisa_ros/model")
# torch/__init__.py copies these C modules' functions into ``torch`` in a loop at import, which no AST shows.
DYNAMIC_EXPORTS = {"torch": ("torch._C._VariableFunctions", "torch._C")}
ANY_KEYWORD = "**"


def code_files(root: Path = REPO) -> list[Path]:
    files = []
    for entry in GPU_CHECK_CODE:
        path = root / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def used_names(paths: list[Path]) -> dict[str, set[str]]:
    """``torch.<...>`` name -> the keywords passed where it is called, over the files (import aliases followed)."""
    used: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "torch":
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "torch"
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "torch":
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or isinstance(parents.get(node), ast.Attribute):
                continue
            name = _dotted(node, aliases)
            if name is None:
                continue
            keywords = used.setdefault(name, set())
            parent = parents.get(node)
            if isinstance(parent, ast.Call) and parent.func is node:
                keywords.update(k.arg for k in parent.keywords if k.arg)
    return used


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(parts)])


class Sources:
    """The torch package's modules in a wheel: top-level definitions, imports and signatures, read as text."""

    def __init__(self, wheel: Path):
        self.modules: dict[str, dict] = {}
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                match = re.fullmatch(r"(torch/.*)\.pyi?", info.filename)
                if match and "/testing/" not in info.filename:
                    path = match.group(1)
                    package = path.endswith("/__init__")
                    module = path.removesuffix("/__init__").replace("/", ".")
                    try:
                        tree = ast.parse(archive.read(info).decode("utf-8"))
                    except (SyntaxError, UnicodeDecodeError):
                        continue
                    self._index(module, package, tree)
        self.version = re.match(r"torch-([^-]+)-", wheel.name).group(1)

    def _index(self, module: str, package: bool, tree: ast.Module) -> None:
        entry = self.modules.setdefault(module, {"defs": {}, "names": set(), "imports": {}, "stars": []})
        base = module if package else module.rpartition(".")[0]
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                entry["defs"].setdefault(node.name, []).append(_parameters(node))
            elif isinstance(node, ast.ClassDef):
                inits = [_parameters(n)[1:] for n in node.body
                         if isinstance(n, ast.FunctionDef) and n.name in ("__init__", "__new__")]
                entry["defs"].setdefault(node.name, []).extend(inits or [[ANY_KEYWORD]])
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                entry["names"].update(t.id for t in targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:  # relative: from the package, one level up per extra dot
                    parts = base.split(".")
                    source = ".".join(parts[:len(parts) - node.level + 1] + ([source] if source else []))
                for alias in node.names:
                    if alias.name == "*":
                        entry["stars"].append(source)
                    else:
                        entry["imports"][alias.asname or alias.name] = f"{source}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        entry["imports"][alias.asname] = alias.name

    def lookup(self, name: str, depth: int = 0) -> tuple[bool, list[str] | None]:
        """(defined, parameter names: ["**"] if any keyword goes, None if not a function with known parameters)."""
        if name in self.modules:
            return True, None
        module, _, attribute = name.rpartition(".")
        if depth > 8 or not module:
            return False, None
        if module not in self.modules:  # an attribute of a class or a constant: its owner is what is checked
            found, _ = self.lookup(module, depth + 1)
            return found, None
        entry = self.modules[module]
        if attribute in entry["defs"]:
            parameters = sorted({p for overload in entry["defs"][attribute] for p in overload})
            return True, parameters
        if attribute in entry["imports"]:
            found, parameters = self.lookup(entry["imports"][attribute], depth + 1)
            return found, parameters
        for source in [*entry["stars"], *DYNAMIC_EXPORTS.get(module, ())]:
            found, parameters = self.lookup(f"{source}.{attribute}", depth + 1)
            if found:
                return found, parameters
        return attribute in entry["names"], None


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    arguments = node.args
    names = [a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs]
    return names + ([ANY_KEYWORD] if arguments.kwarg else [])


def surface(wheel: Path, names: dict[str, set[str]]) -> dict:
    sources = Sources(wheel)
    found = {}
    for name in sorted(names):
        defined, parameters = sources.lookup(name)
        found[name] = {"defined": defined, "parameters": parameters}
    return {"torch": sources.version, "wheel": wheel.name, "names": found}


def mismatches(surface_file: dict, used: dict[str, set[str]]) -> list[str]:
    """What the code uses that the surface file's torch lacks (or that the file has not looked up)."""
    problems = []
    for name, keywords in sorted(used.items()):
        known = surface_file["names"].get(name)
        if known is None:
            problems.append(f"{name}: not in the surface file (regenerate it: python -P benchmarks/torch_api.py WHEEL)")
        elif not known["defined"]:
            problems.append(f"{name}: not defined in torch {surface_file['torch']}")
        elif known["parameters"] is not None and ANY_KEYWORD not in known["parameters"]:
            extra = sorted(keywords - set(known["parameters"]))
            if extra:
                problems.append(f"{name}: torch {surface_file['torch']} takes no keyword {', '.join(extra)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="a torch wheel of the version to check (any platform)")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/torch_api_<version>.json")
    args = parser.parse_args(argv)
    used = used_names(code_files())
    result = surface(args.wheel, used)
    out = args.out or REPO / "benchmarks" / f"torch_api_{result['torch']}.json"
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    problems = mismatches(result, used)
    print(f"{len(used)} torch names used; written {out}")
    print("\n".join(problems) or f"all defined in torch {result['torch']}, with the keywords used")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
