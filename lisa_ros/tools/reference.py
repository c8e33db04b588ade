"""``lisa-ros params``: the node's parameters, the launch file's arguments and the interfaces, from the code.

    lisa-ros params                 # the parameters, on the terminal
    lisa-ros params --markdown      # (re)write docs/parameters.md, docs/launch.md, docs/interfaces.md
    lisa-ros params --check         # exit 1 naming each page that differs from the code

The pages are written from what the node itself declares (``lisa_ros.core.node_config``,
``lisa_ros.core.engine_options``), from ``launch/lisa.launch.py`` read with ``ast`` (the
``launch`` package is not needed), and from ``msg/ srv/ action/`` verbatim, so they cannot
go stale: ``test/tools/test_reference_docs.py`` fails when a committed page differs.
No rclpy, torch or launch is imported.
"""
from __future__ import annotations

import argparse
import ast
import sys
import textwrap
from pathlib import Path
from typing import Any

from lisa_ros.core.engine_options import ENGINE_OPTIONS, MODEL_OPTION_KEYS, option_description
from lisa_ros.core.node_config import BOUNDS, CHOICES, LIVE_PARAMETERS, PARAMETERS, START_UP_PARAMETERS, when_applied

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the source checkout (launch/, msg/, docs/ beside lisa_ros/)
REGENERATE = "lisa-ros params --markdown"
LAUNCH_FILE = Path("launch") / "lisa.launch.py"
INTERFACE_FOLDERS = ("msg", "srv", "action")
# A launch argument's type: the Python builtins OVERRIDES names (the only names its tables use).
LAUNCH_TABLE_NAMES = {"str": str, "bool": bool, "float": float, "list": list}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--markdown", action="store_true",
                      help="write the reference pages (parameters, launch arguments, interfaces) into --docs")
    mode.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each stale page")
    parser.add_argument("--root", type=Path, default=SOURCE_ROOT,
                        help="the lisa_ros source checkout holding launch/, msg/, srv/, action/ (default: %(default)s)")
    parser.add_argument("--docs", type=Path, default=None, help="where the pages go (default: ROOT/docs)")


def run(args: argparse.Namespace) -> int:
    if not (args.markdown or args.check):
        print(parameters_text())
        return 0
    docs = args.docs or args.root / "docs"
    try:
        pages = reference_pages(args.root)
    except FileNotFoundError as error:
        print(f"lisa-ros params: {error}; pass --root with the lisa_ros source checkout", file=sys.stderr)
        return 2
    stale = stale_pages(pages, docs)
    if args.check:
        for name in stale:
            print(f"{docs / name} differs from the code: run `{REGENERATE}`", file=sys.stderr)
        return 1 if stale else 0
    docs.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (docs / name).write_text(pages[name])
        print(f"wrote {docs / name}")
    if not stale:
        print(f"{docs}: every page is up to date")
    return 0


def reference_pages(root: Path = SOURCE_ROOT) -> dict[str, str]:
    """File name in docs/ -> its text."""
    return {"parameters.md": parameters_markdown(),
            "launch.md": launch_markdown(root / LAUNCH_FILE),
            "interfaces.md": interfaces_markdown(root)}


def stale_pages(pages: dict[str, str], docs: Path) -> list[str]:
    """The pages whose file in ``docs`` is missing or differs."""
    return [name for name, text in pages.items()
            if not (docs / name).is_file() or (docs / name).read_text() != text]


# -- parameters ------------------------------------------------------------------------
def parameter_rows() -> list[dict[str, str]]:
    """One row per parameter the node declares: node parameters, then each engine's ``model.*`` options."""
    rows = [dict(name=name, type=ros_type(default), default=shown(default), range=allowed(name),
                 applies=when_applied(name), description=description)
            for name, (default, description) in PARAMETERS.items()]
    for key in MODEL_OPTION_KEYS:
        default = next(options[key][0] for options in ENGINE_OPTIONS.values() if key in options)
        rows.append(dict(name=f"model.{key}", type=ros_type(default), default=shown(default), range="",
                         applies=when_applied(f"model.{key}"), description=option_description(key)))
    return rows


def ros_type(default: Any) -> str:
    """The ROS parameter type the default has (the node declares with dynamic typing and checks at configure)."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "integer"
    if isinstance(default, float):
        return "double"
    if isinstance(default, (list, tuple)):
        return "string array"
    return "string"


def shown(value: Any) -> str:
    """A value as a params file writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if value == "" else value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(shown(item) for item in value) + "]"
    return repr(value)


def allowed(name: str) -> str:
    """The range (``ros2 param describe`` shows it too) or the accepted values, as configure checks them."""
    if name in CHOICES:
        return " \\| ".join(CHOICES[name])
    if name not in BOUNDS:
        return ""
    _, minimum, maximum, strict = BOUNDS[name]
    lower = f"> {minimum}" if strict else f">= {minimum}"
    return lower if maximum is None else f"{minimum} .. {maximum}"


def parameters_text() -> str:
    """The parameters for a terminal: name, type, default, when a change applies."""
    rows = parameter_rows()
    width = max(len(row["name"]) for row in rows)
    return "\n".join(f"{row['name']:<{width}}  {row['type']:<12}  {row['default']:<20}  {row['applies']}"
                     for row in rows)


def parameters_markdown() -> str:
    lines = _header("Parameters of lisa_node",
                    "Every parameter lisa_node declares, for a params file (`--params-file`, the launch file's "
                    "`params_file`) or `ros2 param set`.",
                    "lisa_ros/core/node_config.py and lisa_ros/core/engine_options.py")
    lines += [
        "Configure checks every value and names every problem at once; `ros2 param describe /lisa_node NAME` "
        "shows the same description and range. When a change applies:",
        "",
        f"- **{when_applied(LIVE_PARAMETERS[0])}**: `ros2 param set` on the running node, checked like at configure;",
        f"- **{when_applied('model.path')}**: on a configured node refused with the way to change it "
        "(deactivate, cleanup, set, configure, activate); read when the model loads or the node activates;",
        f"- **{when_applied(START_UP_PARAMETERS[0])}**: read-only; set it in the params file or on the command "
        "line.",
        "",
        "`model.*` are the options of the engine the node runs (`engine`): only that engine's are declared, "
        "and an unset one takes the engine's default shown here. The topics' QoS take ROS 2's standard "
        "`qos_overrides.<topic>.<publisher|subscription>.<policy>` parameters (read-only: set them in the "
        "params file).",
        "",
        "| parameter | type | default | range / values | applies | description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in parameter_rows():
        lines.append(f"| `{row['name']}` | {row['type']} | `{row['default']}` | {row['range']} | {row['applies']} "
                     f"| {_cell(row['description'])} |")
    return "\n".join(lines) + "\n"


# -- launch arguments ------------------------------------------------------------------
def launch_tables(launch_file: Path) -> dict[str, Any]:
    """REMAPS, OVERRIDES and ARGUMENTS of the launch file and its docstring, read with ``ast``.

    Only those assignments are evaluated, with no builtins but the type names OVERRIDES uses: importing
    the file would need ``launch`` and ``ament_index_python``.
    """
    source = launch_file.read_text()
    tree = ast.parse(source, filename=str(launch_file))
    tables: dict[str, Any] = dict(LAUNCH_TABLE_NAMES)
    for statement in tree.body:
        if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)
                and statement.targets[0].id in ("REMAPS", "OVERRIDES", "ARGUMENTS")):
            expression = compile(ast.Expression(statement.value), str(launch_file), "eval")
            tables[statement.targets[0].id] = eval(expression, {"__builtins__": {}}, tables)  # noqa: S307
    # As written (not as Python reads it): a backslash continuing a command line stays one.
    written = ast.get_source_segment(source, tree.body[0].value) if ast.get_docstring(tree) else '""'
    tables["docstring"] = textwrap.dedent(written.strip('"')).strip()
    return tables


def launch_markdown(launch_file: Path) -> str:
    tables = launch_tables(launch_file)
    paragraphs = tables["docstring"].split("\n\n")
    examples = [line[4:] for line in tables["docstring"].splitlines() if line.startswith("    ")]
    lines = _header("Arguments of lisa.launch.py",
                    f"{' '.join(paragraphs[0].split())} Each argument is given as `NAME:=VALUE`:",
                    "launch/lisa.launch.py")
    lines += ["```bash", *examples, "```", "",
              " ".join(paragraphs[-1].split()) if len(paragraphs) > 2 else "", "",
              "| argument | default | sets | description |", "| --- | --- | --- | --- |"]
    for name, (default, description) in tables["ARGUMENTS"].items():
        if name in tables["REMAPS"]:
            sets = f"remaps the node's `{name}` topic"
        elif name in tables["OVERRIDES"]:
            parameter, kind, _ = tables["OVERRIDES"][name]
            sets = f"parameter `{parameter}` ({ros_type(kind())}; only when not empty)"
        else:
            sets = ""
        lines.append(f"| `{name}` | `{shown(default)}` | {sets} | {_cell(description)} |")
    return "\n".join(lines) + "\n"


# -- interfaces ------------------------------------------------------------------------
def interfaces_markdown(root: Path) -> str:
    lines = _header("Messages, services and actions of lisa_ros",
                    "The definitions lisa_node's topics, services and actions use, as the package builds them "
                    "(`ros2 interface show lisa_ros/msg/NAME` prints the same).",
                    "msg/, srv/ and action/ (each file verbatim)")
    for folder in INTERFACE_FOLDERS:
        files = sorted((root / folder).glob(f"*.{folder}"))
        if not files and not (root / folder).is_dir():
            raise FileNotFoundError(f"no {root / folder} folder")
        for path in files:
            lines += [f"## lisa_ros/{folder}/{path.stem}", "", f"`{folder}/{path.name}`:", "", "```",
                      path.read_text().rstrip("\n"), "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _header(title: str, purpose: str, source: str) -> list[str]:
    return [f"# {title}", "", purpose, "",
            f"> Generated from {source} by `{REGENERATE}` (run it in the source checkout after changing them); "
            "do not edit by hand: `test/tools/test_reference_docs.py` fails when this page differs from the code.",
            ""]


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")
