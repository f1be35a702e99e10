"""What an export wrote (``ExportReport``), the error it raises, and the one line that loads it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sp_assets.core.splitting import SPLITS


class ExportError(RuntimeError):
    """The export could not be written; the message names the pair or file and what to do."""


def load_command(data_dir: str | os.PathLike[str]) -> str:
    """The one line that loads the exported Parquet with Hugging Face ``datasets``."""
    return f'from datasets import load_dataset; ds = load_dataset("parquet", data_dir="{Path(data_dir).as_posix()}")'


@dataclass
class ExportReport:
    """What ``export_benchmark`` wrote. Paths are absolute; ``as_dict`` gives a JSON-able summary."""

    out_dir: Path
    name: str
    n_pairs: int
    counts: dict[str, dict[str, int]]  # category -> split -> pairs
    n_controls: int
    parquet_files: dict[str, list[Path]]
    webdataset_files: dict[str, list[Path]]
    datasheet: Path
    gallery: Path | None
    fiftyone_dir: Path | None
    manifest: Path
    skipped: dict[str, str] = field(default_factory=dict)  # format -> why it was not written
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    unchanged: bool = False  # the export on disk was kept: it was made from the same inputs
    n_lookalikes: int = 0
    lookalike_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # category -> split -> look-alikes
    lookalike_parquet_files: dict[str, list[Path]] = field(default_factory=dict)
    lookalike_webdataset_files: dict[str, list[Path]] = field(default_factory=dict)
    n_cleaned_at_export: int = 0  # stored images that still held metadata, published re-encoded without it

    @property
    def split_counts(self) -> dict[str, int]:
        return {s: sum(c.get(s, 0) for c in self.counts.values()) for s in SPLITS}

    @property
    def load_command(self) -> str:
        return load_command(self.out_dir / "data")

    def as_dict(self) -> dict[str, Any]:
        def rel(p: Path | None) -> str | None:
            return None if p is None else p.relative_to(self.out_dir).as_posix()

        return {
            "out_dir": str(self.out_dir), "name": self.name, "n_pairs": self.n_pairs,
            "counts": self.counts, "split_counts": self.split_counts, "n_controls": self.n_controls,
            "parquet_files": {s: [rel(p) for p in ps] for s, ps in self.parquet_files.items()},
            "webdataset_files": {s: [rel(p) for p in ps] for s, ps in self.webdataset_files.items()},
            "n_lookalikes": self.n_lookalikes, "lookalike_counts": self.lookalike_counts,
            "lookalike_parquet_files": {s: [rel(p) for p in ps] for s, ps in self.lookalike_parquet_files.items()},
            "lookalike_webdataset_files": {s: [rel(p) for p in ps]
                                           for s, ps in self.lookalike_webdataset_files.items()},
            "datasheet": rel(self.datasheet), "gallery": rel(self.gallery), "fiftyone_dir": rel(self.fiftyone_dir),
            "n_cleaned_at_export": self.n_cleaned_at_export,
            "skipped": self.skipped, "warnings": self.warnings, "load_command": self.load_command,
            "seconds": round(self.seconds, 3),
        }

    def markdown(self) -> str:
        """A short summary for Dagster metadata."""
        kept = " (unchanged inputs: the export on disk was kept)" if self.unchanged else ""
        lines = [f"**{self.n_pairs} pairs** exported to `{self.out_dir}`{kept}", "",
                 "| category | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
        lines += [f"| {c} | " + " | ".join(str(v.get(s, 0)) for s in SPLITS) + " |" for c, v in self.counts.items()]
        if self.n_lookalikes:
            lines += ["", f"**{self.n_lookalikes} look-alikes** (safe images of the category, in `lookalikes/`)", "",
                      "| category | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
            lines += [f"| {c} | " + " | ".join(str(v.get(s, 0)) for s in SPLITS) + " |"
                      for c, v in self.lookalike_counts.items()]
        if self.n_cleaned_at_export:
            lines += ["", f"{self.n_cleaned_at_export} stored images still held metadata (EXIF, GPS, comments, ICC, "
                      "...): published re-encoded without it (`cleaned_at_export` in export_manifest.json)."]
        lines += ["", f"Load: `{self.load_command}`"]
        lines += [f"- {fmt} skipped: {why}" for fmt, why in self.skipped.items()]
        lines += [f"- warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _split_of(name: str) -> str:
    return name.split("-", 1)[0]


def report_from_manifest(out_dir: Path, manifest: dict[str, Any], warnings: list[str]) -> ExportReport:
    """The report of an export already on disk (kept because its inputs did not change)."""
    files = sorted(manifest.get("files", {}))

    def by_split(folder: str) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        for f in files:
            head, _, name = f.rpartition("/")
            if head == folder:
                out.setdefault(_split_of(name), []).append(out_dir / f)
        return out

    gallery = out_dir / "gallery" / "index.html"
    fiftyone_dir = out_dir / "fiftyone"
    return ExportReport(
        out_dir=out_dir, name=manifest["name"], n_pairs=manifest["n_pairs"], counts=manifest["counts"],
        n_controls=manifest["n_controls"], parquet_files=by_split("data"), webdataset_files=by_split("webdataset"),
        datasheet=out_dir / "README.md", gallery=gallery if gallery.is_file() else None,
        fiftyone_dir=fiftyone_dir if fiftyone_dir.is_dir() else None, manifest=out_dir / "export_manifest.json",
        skipped=manifest.get("skipped", {}), warnings=list(warnings), seconds=0.0, unchanged=True,
        n_lookalikes=manifest.get("n_lookalikes", 0), lookalike_counts=manifest.get("lookalike_counts", {}),
        lookalike_parquet_files=by_split("lookalikes"), lookalike_webdataset_files=by_split("webdataset/lookalikes"),
        n_cleaned_at_export=manifest.get("cleaned_at_export", {}).get("n_images", 0))
