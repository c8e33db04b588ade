"""The node's semantic.* parameters -> SemanticOptions: defaults, and every problem named at once."""
from lisa_ros.core.node_config import PARAMETERS
from lisa_ros.core.semantic_worker import semantic_config


def _defaults(**changes):
    values = {name: default for name, (default, _) in PARAMETERS.items() if name.startswith("semantic.")}
    return values | {f"semantic.{k}": v for k, v in changes.items()}


def test_defaults_are_valid_and_an_empty_list_means_none():
    config = semantic_config(_defaults())
    assert config.problems == [] and config.rate_hz == 0.0 and config.descriptions == {}
    assert config.options.categories == () and config.options.filter_threshold == 0.5
    config = semantic_config(_defaults(categories=[""], filter_threshold=0))
    assert config.problems == [] and config.options.categories == () and config.options.filter_threshold == 0.0


def test_every_problem_is_named_with_its_parameter(tmp_path):
    broken = tmp_path / "d.yaml"
    broken.write_text("floor: [unclosed\n")
    text = "; ".join(semantic_config(_defaults(filter_threshold=3.0, rate_hz=-1)).problems)
    assert "filter_threshold must be in [0, 1]" in text and "semantic.rate_hz must be a number in 0..100" in text
    assert "repeats #0" in semantic_config(_defaults(categories=["a", "A "])).problems[0]
    problems = semantic_config(_defaults(descriptions_file=str(broken))).problems
    assert problems[0].startswith(f"semantic.descriptions_file: {broken} does not parse as YAML at line")
    problems = semantic_config(_defaults(rate_hz=1.0)).problems
    assert problems == ["semantic.rate_hz = 1.0 needs semantic.categories: the periodic mode labels the newest "
                        "frame with that list"]


def test_the_description_file_is_parsed_once_here(tmp_path):
    """What activate hands the segmenter: it used to parse the file again, and an edit in between failed activate
    after the request worker and the subscriptions were created."""
    path = tmp_path / "d.yaml"
    path.write_text("Floor: '  flat grey  concrete '\n")
    config = semantic_config(_defaults(descriptions_file=str(path)))
    path.write_text("floor: [unclosed\n")
    assert config.problems == [] and config.descriptions == {"floor": "flat grey concrete"}
