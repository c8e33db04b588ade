"""Engine options are declared once (lisa_ros.core.engine_options): the node's list, the plumbing
engine, config/lisa.yaml, docs/model.md's options table and the README's first parameters all agree with that
declaration."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lisa_ros.core import node_config
from lisa_ros.core.engine_options import (
    ENGINE_OPTIONS,
    LISA_OPTIONS,
    MODEL_OPTION_KEYS,
    PLUMBING_OPTIONS,
    option_description,
    option_keys,
)
from lisa_ros.core.plumbing_engine import PlumbingEngine

REPO = Path(__file__).resolve().parents[2]


def test_the_node_declares_every_option_of_every_engine_once():
    assert node_config.MODEL_OPTION_KEYS is MODEL_OPTION_KEYS
    assert sorted(MODEL_OPTION_KEYS) == sorted(set(LISA_OPTIONS) | set(PLUMBING_OPTIONS))
    assert len(MODEL_OPTION_KEYS) == len(set(MODEL_OPTION_KEYS))
    assert option_keys("plumbing") == tuple(PLUMBING_OPTIONS) and option_keys("lisa") == tuple(LISA_OPTIONS)
    assert option_keys("yolo") == MODEL_OPTION_KEYS
    for key in MODEL_OPTION_KEYS:
        assert option_description(key).startswith(("lisa engine option", "plumbing engine option"))


def test_plumbing_engine_takes_its_defaults_and_kinds_from_the_declaration():
    engine = PlumbingEngine.from_options({})
    for name, (default, _) in PLUMBING_OPTIONS.items():
        assert getattr(engine, name) == default, name
    with pytest.raises(ValueError, match="'hang_s' must be float"):
        PlumbingEngine.from_options({"hang_s": "long"})


def test_plumbing_engine_ignores_every_lisa_option():
    """One config can switch engines: any declared LISA option, new ones included, is accepted and ignored."""
    PlumbingEngine.from_options({name: default for name, (default, _) in LISA_OPTIONS.items()})


def _yaml_model_section(text: str) -> dict[str, object]:
    """The model: block of config/lisa.yaml, its commented-out options (``# name: value``) included."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("model:"))
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    block = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(re.sub(r"^(\s*)# (\w+:)", r"\1\2", line))
    return yaml.safe_load("\n".join(line[indent:] for line in block))


def test_default_config_lists_every_lisa_option_with_its_default():
    options = _yaml_model_section((REPO / "config" / "lisa.yaml").read_text())
    assert options == {name: default for name, (default, _) in LISA_OPTIONS.items()}


def _model_rows(page: str) -> dict[str, object]:
    """``model.*`` rows of a page's parameter table: name -> default, parsed as YAML would."""
    rows = {}
    for line in (REPO / page).read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`model."):
            continue
        default = yaml.safe_load(cells[1].replace("`", "")) if cells[1] != '""' else ""
        for name in re.findall(r"`model\.(\w+)`", cells[0]):
            rows[name] = default
    return rows


def test_model_page_table_lists_every_lisa_option_with_its_default():
    assert _model_rows("docs/model.md") == {name: default for name, (default, _) in LISA_OPTIONS.items()}


def test_readme_first_parameters_give_the_lisa_defaults():
    rows = _model_rows("README.md")
    assert rows and rows == {name: LISA_OPTIONS[name][0] for name in rows}


def test_engines_are_the_ones_config_accepts():
    from lisa_ros.core.engine import ENGINE_TYPES

    assert tuple(ENGINE_OPTIONS) == ENGINE_TYPES
