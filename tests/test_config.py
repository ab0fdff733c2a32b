"""Recipe schema: unknown keys, wrong types and bad values are one line naming the file and field."""

import re

import pytest

from deploykit.config import Recipe, build_recipe, load_recipe, parse_override
from deploykit.errors import UserError


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_overrides_set_nested_values_with_yaml_types(tmp_path):
    p = write(tmp_path, "data: {name: sst2}\nfinetune: {epochs: 3}\n")
    r = load_recipe(p, ["finetune.epochs=2", "finetune.learning_rate=1e-4", "data.label_names=[neg, pos]"])
    assert r.finetune.epochs == 2
    assert r.finetune.learning_rate == pytest.approx(1e-4)
    assert r.data.label_names == ["neg", "pos"]


def test_override_creates_a_missing_section(tmp_path):
    r = load_recipe(write(tmp_path, "data: {name: sst2}\n"), ["quantize.mode=static"])
    assert r.quantize.mode == "static"
    assert r.stages() == ["quantize"]


def test_bare_section_means_defaults_and_null_override_removes_it():
    r = build_recipe({"data": {"name": "x"}, "bench": None, "finetune": None})
    assert r.stages() == ["finetune", "bench"]
    r = build_recipe({"data": {"name": "x"}, "bench": None, "finetune": None}, ["bench=null"])
    assert r.stages() == ["finetune"]


def test_unknown_key_names_file_and_field(tmp_path):
    p = write(tmp_path, "data: {name: sst2}\nfinetune: {epoch: 2}\n")
    with pytest.raises(UserError, match=r"r\.yaml: unknown key 'finetune\.epoch'"):
        load_recipe(p)


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(UserError, match="unknown key 'compress'"):
        load_recipe(write(tmp_path, "compress: {}\n"))


def test_wrong_type_names_field(tmp_path):
    with pytest.raises(UserError, match=r"finetune\.batch_size: .*integer.*'many'"):
        load_recipe(write(tmp_path, "data: {name: a}\nfinetune: {batch_size: many}\n"))


def test_bad_value_names_field(tmp_path):
    with pytest.raises(UserError, match=r"finetune\.strategy"):
        load_recipe(write(tmp_path, "data: {name: a}\nfinetune: {strategy: everything}\n"))
    with pytest.raises(UserError, match=r"prune\.ffn=1\.5 must be in \[0, 1\)"):
        load_recipe(write(tmp_path, "prune: {ffn: 1.5}\n"))


def test_data_needs_exactly_one_source():
    with pytest.raises(UserError, match="exactly one of data.name"):
        build_recipe({"data": {"name": "a", "path": "b"}})


def test_partial_strategy_needs_something_frozen():
    with pytest.raises(UserError, match="partial"):
        build_recipe({"finetune": {"strategy": "partial"}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(write(tmp_path, "finetune: [\n"))
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.yaml: not UTF-8 text \(byte 9 is 0xe9\); save the recipe as UTF-8"):
        load_recipe(latin1)


def test_bad_override_syntax():
    with pytest.raises(UserError, match="key=value"):
        parse_override("finetune.epochs")
    for key in (".epochs", "finetune..epochs", "finetune.", "finetune. epochs"):  # was "unknown key '(top level)'"
        with pytest.raises(UserError, match=f"'{re.escape(key)}' has an empty or space-padded name between its dots"):
            parse_override(f"{key}=2")
    assert parse_override("finetune.epochs =2") == ("finetune.epochs", 2)  # spaces around the key stay allowed


def test_stage_order_is_fixed_whatever_the_yaml_order():
    r = Recipe.model_validate({"bench": {}, "quantize": {}, "finetune": {}})
    assert r.stages() == ["finetune", "quantize", "bench"]


# --- YAML 1.2 scalars: only true/false are booleans ---------------------------------------------------

def test_set_bf16_off_is_the_string_off():
    assert parse_override("finetune.bf16=off") == ("finetune.bf16", "off")
    r = build_recipe({"data": {"name": "x"}}, ["finetune.bf16=off", "distill.bf16=on", "finetune.tensorboard=true"])
    assert (r.finetune.bf16, r.distill.bf16, r.finetune.tensorboard) == ("off", "on", True)


def test_recipe_file_reads_yaml_1_2_scalars(tmp_path):
    p = write(tmp_path, "data: {name: a, label_names: [no, yes]}\n"
                        "finetune: {bf16: off, tensorboard: False, epochs: 2, learning_rate: 1.0e-3, max_steps: -1}\n"
                        "distill: {bf16: on, epochs: 2, early_stopping_patience: null}\n")
    r = load_recipe(p)
    assert r.finetune.bf16 == "off" and r.distill.bf16 == "on" and r.finetune.tensorboard is False
    assert r.data.label_names == ["no", "yes"]  # YAML 1.1 would have made them False / True
    assert (r.finetune.epochs, r.finetune.learning_rate, r.finetune.max_steps) == (2, 1e-3, -1)
    assert r.distill.early_stopping_patience is None


def test_error_from_an_override_names_the_set_item_not_the_file(tmp_path):
    p = write(tmp_path, "data: {name: a}\nfinetune: {epochs: 3}\n")
    with pytest.raises(UserError, match=r"^--set finetune\.epochs=abc: finetune\.epochs: .*number") as err:
        load_recipe(p, ["finetune.epochs=abc"])
    assert "r.yaml" not in str(err.value)
    with pytest.raises(UserError, match=r"^--set finetune\.nonsense=1: unknown key"):
        load_recipe(p, ["finetune.nonsense=1"])
    # an error in the file itself still names the file, even with unrelated overrides
    with pytest.raises(UserError, match=r"r\.yaml: finetune\.batch_size"):
        load_recipe(write(tmp_path, "data: {name: a}\nfinetune: {batch_size: many}\n"), ["data.max_length=64"])


# --- YAML 1.2 core schema for every plain scalar; duplicated keys refused ---------------------------------

@pytest.mark.parametrize("raw, value", [
    ("010", 10), ("-7", -7), ("+3", 3), ("0o17", 15), ("0x1F", 31), ("1.5", 1.5), ("1e3", 1000.0), (".5", 0.5),
    ("1:30", "1:30"), ("1_000", "1_000"), ("2024-01-01", "2024-01-01"), ("0b101", "0b101"), ("yes", "yes"),
    ("null", None), ("~", None), ("NULL", None), ("TRUE", True), ("False", False), ("=", "="), ("<<", "<<"),
])
def test_plain_scalars_follow_the_yaml_1_2_core_schema(raw, value):
    key, got = parse_override(f"x={raw}")
    assert got == value and type(got) is type(value), (raw, got)


def test_infinities_and_nan_resolve_as_floats_but_the_schema_refuses_them():
    import math

    assert parse_override("x=.inf")[1] == math.inf and parse_override("x=-.Inf")[1] == -math.inf
    assert math.isnan(parse_override("x=.NaN")[1])
    for raw in (".inf", ".nan", "inf"):
        with pytest.raises(UserError, match=r"^--set finetune\.learning_rate=.*: finetune\.learning_rate: .*finite"):
            build_recipe({"data": {"name": "x"}}, [f"finetune.learning_rate={raw}"])


def test_recipe_values_are_yaml_1_2(tmp_path):
    r = load_recipe(write(tmp_path, "name: 2024-01-01\ndata: {name: a, seed: 010}\nfinetune: {logging_steps: 0x10}\n"))
    assert (r.name, r.data.seed, r.finetune.logging_steps) == ("2024-01-01", 10, 16)


def test_a_merge_key_is_named_as_one(tmp_path):
    # it was "unknown key 'finetune.<<' (check the spelling)", which a recipe copied from YAML 1.1 tooling cannot fix
    p = write(tmp_path, "data: {name: a}\nfinetune: {<<: {learning_rate: 1.0e-3}}\n")
    with pytest.raises(UserError, match=r"'finetune.<<' is a YAML 1.1 merge key, which recipes do not read"):
        load_recipe(p)


def test_a_duplicated_key_is_refused_naming_both_lines(tmp_path):
    p = write(tmp_path, "data: {name: a}\nfinetune:\n  learning_rate: 1.0e-3\nbench: {}\nfinetune:\n  epochs: 1\n")
    with pytest.raises(UserError) as err:
        load_recipe(p)
    assert str(err.value) == f"{p} line 5: key 'finetune' appears twice (line 2 first); merge the two"
    with pytest.raises(UserError, match=r"r\.yaml line 2: key 'epochs' appears twice \(line 2 first\)"):
        load_recipe(write(tmp_path, "data: {name: a}\nfinetune: {epochs: 1, epochs: 2}\n"))
    with pytest.raises(UserError, match=r"^--set data=\{name: a, name: b\}: key 'name' appears twice"):
        parse_override("data={name: a, name: b}")


@pytest.mark.parametrize("item, field, takes", [("finetune.learning_rate=true", "finetune.learning_rate", "should be a number"),
                                                ("finetune.batch_size=true", "finetune.batch_size", "should be a number"),
                                                ("data.seed=false", "data.seed", "should be a number"),
                                                ("distill.student_layers=[0, true]", "distill.student_layers",
                                                 "each item should be a number"),
                                                ("bench.targets=[true]", "bench.targets",
                                                 "each item should be 'cpu', 'edge' or 'gpu'"),
                                                # not "a number" where the field takes none (the message said so)
                                                ("finetune.bf16=true", "finetune.bf16", "should be 'auto', 'on' or 'off'"),
                                                ("data.text_column=true", "data.text_column",
                                                 "should be a text (quote it: 'true')"),
                                                ("data.max_length=true", "data.max_length", "should be a number or 'auto'")])
def test_true_or_false_where_not_taken_says_what_is(item, field, takes):
    with pytest.raises(UserError, match=rf"--set {re.escape(item)}: {field}: {re.escape(takes)}, not true/false"):
        build_recipe({"data": {"name": "x"}, "finetune": None, "distill": None}, [item])


@pytest.mark.parametrize("item, says", [("finetune.max_steps=null", "should be a number, not null (leave the key out "
                                                                  "for its default, -1)"),
                                        ("bench.targets=null", "should be a list, not null (leave the key out for its "
                                                               "default, ['cpu'])"),
                                        ("data.task=null", "should be 'classification', 'generation' or "
                                                           "'token_classification', not null")])
def test_null_where_not_taken_names_the_default(item, says):
    # `max_steps: null` (or an empty `max_steps:` in YAML) said only "Input should be a valid integer"
    with pytest.raises(UserError, match=rf"--set {re.escape(item)}: {item.split('=')[0]}: {re.escape(says)}"):
        build_recipe({"data": {"name": "x"}, "finetune": None}, [item])


def test_null_still_goes_where_it_is_taken():
    r = build_recipe({"data": {"name": "x", "train_file": None}, "finetune": {"eval_steps": None}})
    assert r.data.train_file is None and r.finetune.eval_steps is None


def test_booleans_still_go_where_they_are_taken():
    r = build_recipe({"data": {"name": "x"}, "finetune": {"group_by_length": True, "packing": False}})
    assert r.finetune.group_by_length is True and r.finetune.packing is False


@pytest.mark.parametrize("names, message", [("[neg, neg, pos]", "'neg' appears twice; give every class its own name"),
                                            ("[]", "is empty")])
def test_label_names_must_name_each_class_once(names, message):
    # two classes of one name: every prediction of either would print it, and label2id keeps one of them
    with pytest.raises(UserError, match=rf"data\.label_names: {re.escape(message)}"):
        build_recipe({"data": {"name": "x"}}, [f"data.label_names={names}"])


@pytest.mark.parametrize("template, message", [("no placeholder", "names no {column}: every prompt would be the same"),
                                               ('""', "names no {column}"), ('"{}"', "names no {column}"),
                                               ('"a {"', "is not a valid format string")])
def test_a_prompt_template_must_name_a_column(template, message):
    # a template without {column} made every prompt the same text, and "" fell back to the default unsaid
    with pytest.raises(UserError, match=rf"data\.prompt_template: {re.escape(message)}"):
        build_recipe({"data": {"name": "x", "task": "generation"}}, [f"data.prompt_template={template}"])
    ok = build_recipe({"data": {"name": "x", "task": "generation", "prompt_template": "Review: {sentence}"}})
    assert ok.data.prompt_template == "Review: {sentence}"


def test_a_set_value_yaml_reads_as_a_mapping_says_to_quote_it():
    # "Review: {sentence}" is a YAML mapping; the line said only "Input should be a valid string"
    with pytest.raises(UserError, match=r"data\.prompt_template: Input should be a valid string \(got the mapping "
                                        r"\{'Review': \{'sentence': None\}\}: .*quote the whole value\)"):
        build_recipe({"data": {"name": "x", "task": "generation"}}, ["data.prompt_template=Review: {sentence}"])
    quoted = build_recipe({"data": {"name": "x", "task": "generation"}}, ['data.prompt_template="Review: {sentence}"'])
    assert quoted.data.prompt_template == "Review: {sentence}"


def test_a_folder_given_as_the_recipe_is_called_a_folder_not_missing(tmp_path):
    with pytest.raises(UserError, match=r"is a folder; give the recipe's \.yaml file"):
        load_recipe(tmp_path)


@pytest.mark.parametrize("override, message", [
    ("bench.batch_sizes=[0]", r"bench.batch_sizes.0: Input should be greater than or equal to 1"),
    ("bench.batch_sizes=[]", r"bench.batch_sizes: List should have at least 1 item"),
    ("bench.targets=[]", r"bench.targets: List should have at least 1 item"),  # a report of no rows, exit 0
    ("data.text_column=label", r"label_column and text_column are both 'label': name the column that holds the text"),
    ("data.text_pair_column=label", r"label_column and text_pair_column are both 'label'"),
    # built in the teacher's order whatever the list said: [5, 3, 1] trained as [1, 3, 5]
    ("distill.student_layers=[5, 3, 1]", r"in increasing order, as \[1, 3, 5\]"),
])
def test_settings_that_would_measure_or_train_nothing_are_refused(override, message):
    with pytest.raises(UserError, match=message):
        build_recipe({"data": {"name": "sst2"}, "bench": {}}, [override])


@pytest.mark.parametrize("steps", [0, -5])
def test_a_step_budget_of_zero_or_below_minus_one_is_refused(steps):
    # both trained on the epochs' budget, as -1 does, without a word
    with pytest.raises(UserError, match=rf"finetune.max_steps: should be a number of optimizer steps >= 1, or -1 for "
                                        rf"the epochs' budget \(got {steps}\)"):
        build_recipe({"data": {"name": "x"}}, [f"finetune.max_steps={steps}"])
    assert build_recipe({"data": {"name": "x"}}, ["finetune.max_steps=-1"]).finetune.max_steps == -1


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_training_seed_numpy_cannot_take_is_refused_at_load(seed):
    # validate said ok, then training stopped with "ValueError: Seed must be between 0 and 2**32 - 1", exit 1
    with pytest.raises(UserError, match=rf"--set finetune.seed={seed}: finetune.seed: Input should be"):
        build_recipe({"data": {"name": "x"}, "finetune": None}, [f"finetune.seed={seed}"])
    assert build_recipe({"data": {"name": "x"}, "finetune": None}, ["finetune.seed=4294967295"]).finetune.seed == 2**32 - 1
