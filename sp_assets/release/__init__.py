"""The benchmark release: every benchmark pair exported as Parquet, WebDataset, a datasheet and a gallery."""

from sp_assets.release.export import LABEL_NAMES, SPLITS, ExportError, ExportReport, export_benchmark, load_command

__all__ = ["LABEL_NAMES", "SPLITS", "ExportError", "ExportReport", "export_benchmark", "load_command"]
