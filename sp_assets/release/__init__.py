"""The benchmark release: every benchmark pair exported as Parquet, WebDataset, a datasheet and a gallery."""

from sp_assets.core.splitting import SPLITS
from sp_assets.release.columns import LABEL_NAMES
from sp_assets.release.export import export_benchmark, export_name
from sp_assets.release.report import ExportError, ExportReport, load_command

__all__ = ["LABEL_NAMES", "SPLITS", "ExportError", "ExportReport", "export_benchmark", "export_name", "load_command"]
