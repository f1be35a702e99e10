"""What evaluation harnesses read besides the VLMEvalKit TSVs: the image list, an lmms-eval task folder and an
Inspect task file, both over the export's ``preference`` Parquet (one row per image).

    <export>/items.csv                       one row per image: id (<pair_id>:<half>), split, index (its row in
                                             vlmevalkit/SafetyPairs_<split>.tsv), pair_id, half, category, label
    <export>/lmms-eval/safetypairs_<split>.yaml + utils.py   lmms-eval tasks ``safetypairs_<split>``
    <export>/inspect-ai/safetypairs.py       the Inspect task ``safetypairs`` (``-T split=<split>``)

``python -m sp_assets.evaluate score`` matches a harness's predictions to ``items.csv``. The task files are
``static/harness/`` templates, written unchanged except the export's name and the split.
"""

from __future__ import annotations

import csv
import string
from pathlib import Path
from typing import Any, Mapping, Sequence

from sp_assets.core.scoring import ITEM_FIELDS, item_id

ITEMS = "items.csv"
LMMS_EVAL = "lmms-eval"
INSPECT = "inspect-ai"
_STATIC = Path(__file__).parent / "static" / "harness"


def write_items(root: Path, items: Sequence[Mapping[str, Any]]) -> Path:
    """``items.csv``: the images the VLMEvalKit TSVs hold, in their order (``vlmevalkit.write_vlmevalkit``)."""
    path = root / ITEMS
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.DictWriter(fh, ITEM_FIELDS, lineterminator="\n")
        out.writeheader()
        out.writerows({"id": item_id(i["pair_id"], i["half"]), **i} for i in items)
    return path


def read_items(export_dir: Path) -> list[dict[str, Any]]:
    """The rows of an export's ``items.csv`` (``index`` as int); a clear error when the export has none."""
    path = Path(export_dir) / ITEMS
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {export_dir} a SafetyPairs export? Exports written "
                                "before the scorer existed lack it; export the benchmark again.")
    with open(path, newline="", encoding="utf-8") as fh:
        return [{**row, "index": int(row["index"])} for row in csv.DictReader(fh)]


def write_tasks(root: Path, name: str, splits: Sequence[str]) -> list[Path]:
    """The lmms-eval task of every split (and its ``utils.py``) and the Inspect task file."""
    lmms = root / LMMS_EVAL
    lmms.mkdir()
    template = string.Template((_STATIC / "lmms_eval_task.yaml").read_text(encoding="utf-8"))
    written = []
    for split in splits:
        path = lmms / f"safetypairs_{split}.yaml"
        path.write_text(template.substitute(name=name.replace("\n", " "), split=split), encoding="utf-8")
        written.append(path)
    (lmms / "utils.py").write_bytes((_STATIC / "lmms_eval_utils.py").read_bytes())
    (root / INSPECT).mkdir()
    (root / INSPECT / "safetypairs.py").write_bytes((_STATIC / "inspect_task.py").read_bytes())
    return written + [lmms / "utils.py", root / INSPECT / "safetypairs.py"]


def describe(splits: Sequence[str]) -> dict[str, str]:
    """The datasheet's lines for the two harnesses, with the commands that run them."""
    split = "test" if "test" in splits else (splits[0] if splits else "test")
    score = "python -m sp_assets.evaluate score --benchmark . --predictions"
    return {
        "lmms-eval": (f"`{LMMS_EVAL}/safetypairs_<split>.yaml` + `utils.py`: every image (from the `preference` "
                      "Parquet) with the policy question, answer 'unsafe' or 'safe'. From this folder: "
                      "`python -m lmms_eval --model <model> --model_args pretrained=<checkpoint> --tasks "
                      f"safetypairs_{split} --include_path {LMMS_EVAL} --log_samples --output_path lmms-eval-results`, "
                      f"then `{score} <the samples .jsonl>` for pair accuracy."),
        "Inspect": (f"`{INSPECT}/safetypairs.py`: the same questions as an Inspect task. "
                    f"`inspect eval {INSPECT}/safetypairs.py -T split={split} --model <provider/model> --log-format "
                    f"json`, then `{score} <the log .json>`."),
        "Scoring": (f"`{ITEMS}` lists every image (`id` = `<pair_id>:<half>`, its VLMEvalKit `index`, category, "
                    f"label). `{score} <file>` reads VLMEvalKit's result file, lmms-eval's samples, an Inspect log or "
                    "a CSV/JSONL of `id,rating` or `id,score`, and reports accuracy on each half, pair accuracy, the "
                    "look-alike FPR and ROC-AUC per category with 95% intervals; `--add-to .` adds the guard to the "
                    "table above."),
    }
