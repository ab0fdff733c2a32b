"""Recipe YAML by the YAML 1.2 core schema, with duplicated keys refused (used by deploykit/config/).

    read_yaml("bf16: off\nseed: 010")     # {"bf16": "off", "seed": 10}; YAML 1.1 would give False and 8

PyYAML implements YAML 1.1, whose implicit types turn `off`/`no` into booleans, `010` into 8 and `1:30` into
90; a recipe value must mean what it says, so only the 1.2 core types are resolved here.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml


class DuplicateKeyError(Exception):
    """A mapping key given twice; `where` (the file or `--set` item) is added by the caller."""

    def __init__(self, key: str, line: int, first: int):
        super().__init__(f"line {line}: key '{key}' appears twice (line {first} first); merge the two")
        self.key, self.line, self.first = key, line, first


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader reading plain scalars by the YAML 1.2 core schema only, duplicated keys refused.

    null: null Null NULL ~ (empty); bool: true/false (three spellings each); int: decimal (`010` is 10),
    0o octal, 0x hex; float: decimal with optional exponent, [-+].inf, .nan. Everything else is a string:
    YAML 1.1's on/off/yes/no booleans, `1:30` (sexagesimal 90), `1_000`, `0b101`, dates and `<<` merge
    keys, so `bf16: off` reaches the schema as "off" and `name: 2024-01-01` as a string.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], Any] = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    first = seen.setdefault((key_node.tag, key_node.value), key_node)
                    if first is not key_node:
                        raise DuplicateKeyError(key_node.value, key_node.start_mark.line + 1,
                                                first.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)

    def construct_core_int(self, node) -> int:
        text = self.construct_scalar(node)
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)

    def construct_core_float(self, node) -> float:
        text = self.construct_scalar(node).lower()
        if text.endswith(".inf"):
            return -math.inf if text.startswith("-") else math.inf
        return math.nan if text == ".nan" else float(text)


RecipeLoader.yaml_implicit_resolvers = {}  # a class attribute of its own: SafeLoader's table stays untouched
for _tag, _pattern, _first in (
        ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
        ("bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
        ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
        ("float", r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
         list("-+0123456789."))):
    RecipeLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), _first)
RecipeLoader.add_constructor("tag:yaml.org,2002:int", RecipeLoader.construct_core_int)
RecipeLoader.add_constructor("tag:yaml.org,2002:float", RecipeLoader.construct_core_float)


def read_yaml(text: str) -> Any:
    """Parse recipe YAML (or one `--set` value) by the YAML 1.2 core schema; DuplicateKeyError for a key given twice."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader
