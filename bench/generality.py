"""The default recipe on other datasets, with only its data section changed (issue 19 item 7): teacher and
final accuracy, and the final artifact's speed ratios, from one `deploykit run` per dataset.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/generality.py agnews --out runs/general-agnews
    DEPLOYKIT_DATA_DIR=../shared/data python bench/generality.py instruct --out runs/general-instruct
    python bench/generality.py agnews --out runs/general-agnews --print-only   # the table of a finished run

Every other section (finetune, distill, prune, quantize, bench, gate) is recipes/sst2-minilm.yaml's, as a
user who swaps in their data gets it. A run folder resumes like any `deploykit run --out`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

DEFAULT = Path(__file__).resolve().parent.parent / "recipes" / "sst2-minilm.yaml"

# What a user writes for each dataset of ../shared/data: the data section and nothing else.
DATA = {
    "sst2": yaml.safe_load(DEFAULT.read_text())["data"],
    # one labelled file: seeded stratified validation / test splits of it
    "agnews": {"name": "agnews", "train_file": "dev.tsv", "column_names": ["text", "label"],
               "text_column": "text", "label_column": "label", "validation_split": 0.1, "test_split": 0.1},
    # dolly-15k's 8 categories from the instruction text alone; test.jsonl is the held-out file
    "instruct": {"name": "instruct", "text_column": "instruction", "label_column": "category"},
}


def recipe_for(dataset: str) -> dict:
    """recipes/sst2-minilm.yaml with its data section replaced by DATA[dataset] and its name suffixed."""
    recipe = yaml.safe_load(DEFAULT.read_text())
    recipe["name"] = f"{recipe['name']}-on-{dataset}"
    recipe["data"] = DATA[dataset]
    return recipe


def table(out: Path) -> str:
    """One markdown row per artifact of the run's bench report, plus the gate values of every stage."""
    state = json.loads((out / "pipeline.json").read_text())
    report = json.loads((out / "bench" / "report.json").read_text())
    lines = [state.get("headline", "(no headline)"), ""]
    for stage, info in state["stages"].items():
        gate = info.get("gate")
        if gate:
            lines.append(f"gate after {stage}: {gate['metric']} {gate['value']:.2f} on {gate['n']} {gate['split']} "
                         f"rows (its input {gate['input']:.2f}, teacher {gate['reference']:.2f})")
    machine = report["machine"]
    lines += ["", f"machine: {machine['cpu']}, {machine['cores']} cores, {' '.join(machine['isa'])}"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=sorted(DATA))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--print-only", action="store_true", help="print the table of a finished run")
    args = ap.parse_args()
    if not args.print_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        path = args.out.with_name(args.out.name + ".yaml")
        path.write_text(yaml.safe_dump(recipe_for(args.dataset), sort_keys=False))
        done = subprocess.run([str(Path(sys.executable).parent / "deploykit"), "run", str(path), "--out", str(args.out)])
        if done.returncode:
            sys.exit(done.returncode)
    print(table(args.out))


if __name__ == "__main__":
    main()
