"""Shared helpers of the benchmark scripts: machine description, statistics, JSON + markdown output.

Benchmarks are not tests: nothing here asserts a timing. Every script writes
``benchmarks/results/<name>.json`` (the figures, the command that produced them
and the machine) and prints a markdown table.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CACHE = REPO / "benchmarks" / ".cache"  # ignored by git (.cache/)

try:  # the colcon install (scripts/ros_env.sh) provides lisa_ros with its messages; else the source tree
    import lisa_ros  # noqa: F401
except ImportError:
    sys.path.append(str(REPO))

from lisa_ros.core.stats import percentiles  # noqa: E402


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 ** 2, 1)
    return 0.0


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def other_processes_cpu() -> list[str]:
    """The busiest processes right now (a note on how shared the machine was)."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,rss,comm", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=5).stdout.splitlines()[1:6]
    except (OSError, subprocess.SubprocessError):
        return []
    return [" ".join(line.split()) for line in out]


def machine(device: str = "cpu") -> dict[str, Any]:
    """What the figures were measured on; call it at the start and the end of a run (load changes)."""
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": ram_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_1_5_15": load_average(),
        "busiest_processes": other_processes_cpu(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            index = torch.device(device).index or 0
            props = torch.cuda.get_device_properties(index)
            info["gpu"] = torch.cuda.get_device_name(index)
            info["gpu_memory_gib"] = round(props.total_memory / 1024 ** 3, 1)
            info["cuda"] = torch.version.cuda
            try:
                info["nvidia_smi"] = subprocess.run(
                    ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu",
                     "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                pass
        else:
            info["gpu"] = None
    except ImportError:
        pass
    for name in ("transformers", "bitsandbytes", "accelerate", "numpy"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001 (bitsandbytes may fail to import on odd machines)
            pass
    if "RMW_IMPLEMENTATION" in os.environ:
        info["rmw"] = os.environ["RMW_IMPLEMENTATION"]
    return info


def summary(values: Sequence[float]) -> dict[str, float]:
    """median / p95 / min / max / mean / n of a list of milliseconds (or anything)."""
    values = sorted(float(v) for v in values)
    if not values:
        return {"n": 0}
    # p95 is a measured value (nearest rank), not one interpolated between two runs.
    p95 = percentiles(values, (95,), method="nearest")[95]
    return {"n": len(values), "median": round(statistics.median(values), 3), "p95": round(p95, 3),
            "min": round(values[0], 3), "max": round(values[-1], 3), "mean": round(statistics.fmean(values), 3)}


def median(values: Iterable[float]) -> float:
    values = list(values)
    return round(statistics.median(values), 3) if values else float("nan")


def timed(fn: Callable[..., Any], *args: Any, sync: Callable[[], None] | None = None,
          **kwargs: Any) -> tuple[Any, float]:
    """(fn(*args, **kwargs), wall milliseconds), with an optional device synchronisation before reading the clock.

    Arguments are passed, not captured in a lambda: a closure in a loop would see the names as they are
    when it runs, not when it was written.
    """
    if sync:
        sync()
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    if sync:
        sync()
    return value, (time.perf_counter() - start) * 1000


def command_line() -> str:
    args = [a for a in sys.argv]
    script = Path(args[0])
    try:
        args[0] = str(script.resolve().relative_to(REPO))
    except ValueError:
        pass
    return "python -P " + shlex.join(args)


def write_result(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    """Writes the JSON (with the command line) and returns its path.

    Through a temporary file and a rename: a run killed by a time limit mid-write
    leaves the previous complete JSON, never a truncated one.
    """
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "command": command_line(), **payload}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    partial.replace(path)
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value != value:  # nan
                return "-"
            return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(info: dict[str, Any]) -> str:
    gpu = info.get("gpu") or "no GPU"
    return (f"{info.get('date_utc')} UTC; {info.get('cpu')} ({info.get('affinity_cpus')} usable cores), "
            f"{info.get('ram_gib')} GiB RAM, {gpu}; torch {info.get('torch')}, transformers "
            f"{info.get('transformers')}, bitsandbytes {info.get('bitsandbytes')}; load average "
            f"{info.get('load_average_1_5_15')}")
