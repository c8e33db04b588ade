"""The node's semantic.* parameters -> SemanticOptions: defaults, and every problem named at once."""
from lisa_ros.core.node_config import PARAMETERS
from lisa_ros.core.semantic_worker import semantic_config


def _defaults(**changes):
    values = {name: default for name, (default, _) in PARAMETERS.items() if name.startswith("semantic.")}
    return values | {f"semantic.{k}": v for k, v in changes.items()}


def test_defaults_are_valid_and_an_empty_list_means_none():
    options, rate_hz, problems = semantic_config(_defaults())
    assert problems == [] and options.categories == () and rate_hz == 0.0 and options.filter_threshold == 0.5
    options, _, problems = semantic_config(_defaults(categories=[""], filter_threshold=0))
    assert problems == [] and options.categories == () and options.filter_threshold == 0.0


def test_every_problem_is_named_with_its_parameter(tmp_path):
    broken = tmp_path / "d.yaml"
    broken.write_text("floor: [unclosed\n")
    _, _, problems = semantic_config(_defaults(filter_threshold=3.0, rate_hz=-1))
    text = "; ".join(problems)
    assert "filter_threshold must be in [0, 1]" in text and "semantic.rate_hz must be a number in 0..100" in text
    _, _, problems = semantic_config(_defaults(categories=["a", "A "]))
    assert "repeats #0" in problems[0]
    _, _, problems = semantic_config(_defaults(descriptions_file=str(broken)))
    assert problems[0].startswith(f"semantic.descriptions_file: {broken} does not parse as YAML at line")
    _, _, problems = semantic_config(_defaults(rate_hz=1.0))
    assert problems == ["semantic.rate_hz = 1.0 needs semantic.categories: the periodic mode labels the newest "
                        "frame with that list"]
