"""Dagster resources: the run settings, and one swappable resource per backend role.

Each backend resource holds only profile names; a profile's implementation and parameters live in
``resources/<role>s.yaml``. Every role is chosen the same way: a profile name, from an environment
variable (``SP_SOURCE``, ``SP_JUDGE``, ...) or from the launchpad / ``--config-json``. A string read from
the environment is passed as Dagster's ``EnvVar``, so the launchpad shows where the value comes from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from dagster import ConfigurableResource, EnvVar
from dagster_duckdb import DuckDBResource
from pydantic import Field

from sp_assets.backends import registry
from sp_assets.backends.base import DEMO_SAFE_PER_CATEGORY, DEMO_UNSAFE_PER_CATEGORY, SourceOptions
from sp_assets.backends.profiles import Profile, get_profile
from sp_assets.core.policy import Policy
from sp_assets.core.policy_variants import VARIANTS_ENV_VAR, Variant, load_variants, split_paths
from sp_assets.core.splitting import SPLIT_METHOD
from sp_assets.execution.intake import INTAKE_VERSION
from sp_assets.execution.lazy import LazyBackend

# The default judge (it also chose the pairs: marked as such), a pixel classifier, and two text filters
# that did not choose them.
DEFAULT_GUARDS = ["scene_text", "open_nsfw", "ocr_toxicity", "ocr_blocklist"]


def _env(name: str, default: str) -> str:
    """The variable's value, or ``default`` when it is unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or default


def _env_var(name: str, default: str) -> str:
    """``EnvVar(name)`` when the variable is set (the launchpad then names it), else ``default``."""
    return EnvVar(name) if os.environ.get(name, "").strip() else default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} must be a whole number") from exc


def _env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name, "")
    return [n.strip() for n in raw.split(",") if n.strip()] if raw.strip() else list(default)


class PipelineSettings(ConfigurableResource):
    """Everything about a run that is not a model: where data lives, the source files, seeds, thresholds."""

    data_root: str = Field(description="Folder for the DuckDB file, images and exports (env SP_DATA_ROOT).")
    images_url: str = Field(
        default="", description="Where images live when not under data_root: a folder or an fsspec URL such as "
        "s3://bucket/prefix, read and written by every worker (env SP_IMAGES_URL).")
    source_dir: str = Field(default="", description="Folder of your images, for source 'folder' (env SP_SOURCE_DIR).")
    manifest: str = Field(
        default="",
        description="Optional CSV, JSONL or Parquet with columns path[, rating, category, rationale, photo] (env SP_MANIFEST).",
    )
    seed: int = Field(default=0, description="Seed for the demo pool, the writer and the split.")
    demo_unsafe_per_category: int = Field(default=DEMO_UNSAFE_PER_CATEGORY, ge=1)
    demo_safe_per_category: int = Field(default=DEMO_SAFE_PER_CATEGORY, ge=0)
    max_image_pixels: int = Field(default=40_000_000, description="Larger images are quarantined.")
    max_file_bytes: int = Field(default=64 * 1024 * 1024, description="Larger files are quarantined.")
    db_lock_timeout_s: float = Field(
        default=600.0, gt=0,
        description="How long a stage waits for another process to let go of the DuckDB file before it stops "
        "with an error (env SP_DB_LOCK_TIMEOUT).")
    execution: str = Field(
        default="in_process",
        description="Where the heavy stages' model work runs: 'in_process' or 'ray' (env SP_EXECUTION).")
    ray_address: str = Field(
        default="local",
        description="For execution 'ray': 'local' starts a Ray on this machine and stops it after the run; 'auto' "
        "or 'ray://host:port' joins a cluster (env SP_RAY_ADDRESS).")
    ray_workers: int = Field(default=2, ge=1, description="Ray workers per kind of work (env SP_RAY_WORKERS).")
    ray_cpus: int = Field(default=0, ge=0, description="CPUs a local Ray may use; 0 = all (env SP_RAY_CPUS).")
    task_retries: int = Field(
        default=2, ge=0, description="Times a failed batch (or one whose worker died) is tried again (env SP_TASK_RETRIES).")
    batch_items: int = Field(
        default=16, ge=1,
        description="Images handed to a model in one call, and committed together (env SP_BATCH_ITEMS); each "
        "model also batches inside, by its profile's batch_size.")
    edit_seeds: list[int] = Field(default=[0], description="One candidate per seed and instruction variant.")
    instruction_variants: int = Field(default=3, ge=1, description=(
        "Instructions per unsafe image (best of N; three let the replacement texts spread so that none covers "
        "more than 15% of a category's pairs)."))
    control_pairs: bool = Field(
        default=True,
        description="Also make a null edit of each unsafe source through the same editor, so the benchmark "
        "can pair an edited unsafe image with an edited safe one.",
    )
    min_ssim_outside: float = Field(default=0.95, description="Preservation: mean SSIM outside the edited region.")
    min_psnr_outside: float = Field(default=30.0, description="Preservation: PSNR (dB) outside the edited region.")
    min_embedding_cosine: float = Field(default=0.80, description="Preservation: whole-image embedding cosine.")
    lpips: bool = Field(default=True, description="Compute LPIPS when torchvision and its cached backbone are present.")
    max_changed_fraction: float = Field(default=0.5, description="Edits that change more of the image are rejected.")
    max_align_shift_px: float = Field(default=24.0, description=(
        "Alignment (edits whose editor reports no region): the largest shift of the image centre, in source "
        "pixels, still taken for editor drift; a larger one is rejected as 'misaligned'."))
    max_align_scale_change: float = Field(
        default=0.05, description="Alignment: the largest zoom in or out (0.05 = 5%).")
    max_align_rotation_deg: float = Field(default=2.0, description="Alignment: the largest rotation, in degrees.")
    min_align_correlation: float = Field(default=0.6, description=(
        "Alignment: the least correlation of the source and the aligned edit (grey, zero-mean); unrelated "
        "content scores below it."))
    min_yield: float = Field(default=0.2, description="Asset check floor on accepted / attempted candidates.")
    split_train: float = 0.6
    split_validation: float = 0.2
    split_test: float = 0.2
    probe_seeds: int = Field(default=10, ge=0, description="Seeds of the sample-efficiency probe (0 turns it off).")
    probe_ood: bool = Field(default=True, description=(
        "Also score the probe on its out-of-distribution pairs: signs on photographs, in fonts and with phrasings "
        "its training pool never held (categories of the default policy)."))
    policy_variants: list[str] = Field(default=[], description=(
        "Policy files (paths) whose categories map onto the run's policy by id: every benchmark image is also "
        "labelled under each, its policy pairs stored, and guards that take a policy asked under each "
        "(env SP_POLICY_VARIANTS, comma-separated)."))
    preview_unsafe: bool = Field(
        default=False, description="Show unsafe images unblurred in UI previews. Off by default."
    )
    preview_pairs: int = Field(default=3, ge=0, description="Pairs shown in materialization previews.")
    export_reviewer_names: bool = Field(
        default=False, description="Publish reviewers' names in the exported benchmark. Off: a stable pseudonym each.")
    export_review_notes: bool = Field(
        default=False, description="Publish reviewers' free-text notes in the exported benchmark. Off by default.")

    @classmethod
    def from_env(cls, **overrides: Any) -> "PipelineSettings":
        """Settings with plain values from the environment, for use outside Dagster (CLIs, scripts)."""
        return cls(**{**_settings_env(_env), **overrides})

    @property
    def root(self) -> Path:
        return Path(self.data_root).expanduser().resolve()

    def source_options(self, policy: Policy) -> SourceOptions:
        return SourceOptions(
            policy=policy, seed=self.seed, source_dir=self.source_dir, manifest=self.manifest,
            demo_unsafe_per_category=self.demo_unsafe_per_category, demo_safe_per_category=self.demo_safe_per_category,
            max_image_pixels=self.max_image_pixels, max_file_bytes=self.max_file_bytes)

    def worker_pool(self) -> Any:
        """The run's worker pool (made once per process for these settings)."""
        from sp_assets.execution.pools import make_pool

        return make_pool(self.execution, self.ray_address, self.ray_workers, self.task_retries,
                         self.ray_cpus or None)

    def variants(self, policy: Policy) -> list[Variant]:
        """The run's policy variants, each mapped onto ``policy`` (a bad file stops with its name and the fix)."""
        return load_variants(policy, self.policy_variants)

    def thresholds(self) -> dict[str, float]:
        return {
            "min_ssim_outside": self.min_ssim_outside,
            "min_psnr_outside": self.min_psnr_outside,
            "min_embedding_cosine": self.min_embedding_cosine,
            "max_changed_fraction": self.max_changed_fraction,
            "max_align_shift_px": self.max_align_shift_px,
            "max_align_scale_change": self.max_align_scale_change,
            "max_align_rotation_deg": self.max_align_rotation_deg,
            "min_align_correlation": self.min_align_correlation,
        }

    def split_fractions(self) -> dict[str, float]:
        return {"train": self.split_train, "validation": self.split_validation, "test": self.split_test}

    def split_config(self) -> dict[str, Any]:
        """What decides the split (its hash is in every benchmark row): seed, fractions and method."""
        return {"seed": self.seed, **self.split_fractions(), "method": SPLIT_METHOD}


def _settings_env(read: Any) -> dict[str, Any]:
    return {
        "data_root": read("SP_DATA_ROOT", "data"),
        "images_url": read("SP_IMAGES_URL", ""),
        "source_dir": read("SP_SOURCE_DIR", ""),
        "manifest": read("SP_MANIFEST", ""),
        "demo_unsafe_per_category": _env_int("SP_DEMO_UNSAFE", DEMO_UNSAFE_PER_CATEGORY),
        "demo_safe_per_category": _env_int("SP_DEMO_SAFE", DEMO_SAFE_PER_CATEGORY),
        "seed": _env_int("SP_SEED", 0),
        "db_lock_timeout_s": float(_env("SP_DB_LOCK_TIMEOUT", "600")),
        "batch_items": _env_int("SP_BATCH_ITEMS", 16),
        "execution": read("SP_EXECUTION", "in_process"),
        "ray_address": read("SP_RAY_ADDRESS", "local"),
        "ray_workers": _env_int("SP_RAY_WORKERS", 2),
        "ray_cpus": _env_int("SP_RAY_CPUS", 0),
        "task_retries": _env_int("SP_TASK_RETRIES", 2),
        "policy_variants": split_paths(os.environ.get(VARIANTS_ENV_VAR, "")),
    }


class BackendResource(ConfigurableResource):
    """A profile name for one backend role. Subclasses set ``role``."""

    role: ClassVar[str] = ""
    profile: str

    def resolve(self, name: str | None = None) -> Profile:
        return get_profile(self.role, name or self.profile)

    def config_sha256(self, name: str | None = None) -> str:
        return registry.config_sha256(self.resolve(name))

    def describe(self, name: str | None = None) -> dict[str, Any]:
        return registry.describe(self.resolve(name))

    def lazy(self, policy: Policy, name: str | None = None) -> LazyBackend:
        """The backend, loaded only when a model call is needed (a memo miss).

        The profile's params (against its backend's ``Params``) and a package it ``requires`` (torchvision
        for the Qwen and LLaVA-OneVision processors) are checked here, when the step takes its backend, so
        a typo or a missing package stops the step before any work or model load. Guards are checked when
        built: a guard that cannot run is skipped with the reason.
        """
        profile = self.resolve(name)
        if self.role != "guard":
            registry.check_profile_params(profile)
            registry.check_requirements(profile)
        return LazyBackend(profile, policy)


class SourceResource(BackendResource):
    role: ClassVar[str] = "source"
    profile: str = Field(default="demo", description="Source profile: 'demo' or 'folder' (env SP_SOURCE).")

    def config(self, settings: PipelineSettings) -> dict[str, Any]:
        """The settings that decide the source pool; hashed into every source row."""
        keys = ["source_dir", "manifest", "seed", "demo_unsafe_per_category", "demo_safe_per_category",
                "max_image_pixels", "max_file_bytes"]
        return {"source": self.profile, "intake": INTAKE_VERSION, **{k: getattr(settings, k) for k in keys}}


class JudgeResource(BackendResource):
    role: ClassVar[str] = "judge"
    profile: str = Field(default="scene_text", description="Judge profile for source labels (env SP_JUDGE).")
    verify_profile: str = Field(
        default="", description="Judge profile for edited images; empty means the same as 'profile' (env SP_VERIFY_JUDGE)."
    )

    @property
    def verifier_name(self) -> str:
        return self.verify_profile or self.profile


class WriterResource(BackendResource):
    role: ClassVar[str] = "writer"
    profile: str = Field(default="template", description="Instruction-writer profile (env SP_WRITER).")


class EditorResource(BackendResource):
    role: ClassVar[str] = "editor"
    profile: str = Field(default="text_region", description="Editor profile (env SP_EDITOR).")
    also: list[str] = Field(
        default=[], description="More editor profiles tried in the same run (best of N across editors; env SP_EDITORS_ALSO, comma-separated).")

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys([self.profile, *self.also]))

    def describe_all(self) -> list[dict[str, Any]]:
        return [self.describe(name) for name in self.names]


class EmbedderResource(BackendResource):
    role: ClassVar[str] = "embedder"
    profile: str = Field(default="efficientnet_lite0", description="Embedder profile (env SP_EMBEDDER).")


class GuardResource(BackendResource):
    """The guards guard_metrics evaluates: profiles in ``resources/guards.yaml``."""

    role: ClassVar[str] = "guard"
    profile: str = Field(default="", description="Unused: guards are a list (see 'profiles').")
    profiles: list[str] = Field(
        default=DEFAULT_GUARDS, description="Guard profiles to evaluate (env SP_GUARDS, comma-separated).")


def default_resources() -> dict[str, Any]:
    """The resources every asset uses, with defaults from the environment."""
    settings_values = _settings_env(_env_var)
    root = Path(_env("SP_DATA_ROOT", "data")).expanduser().resolve()
    return {
        "settings": PipelineSettings(**settings_values),
        "duckdb": DuckDBResource(database=str(root / "safetypairs.duckdb")),
        "source": SourceResource(profile=_env_var("SP_SOURCE", "demo")),
        "judge": JudgeResource(profile=_env_var("SP_JUDGE", "scene_text"),
                               verify_profile=_env_var("SP_VERIFY_JUDGE", "")),
        "writer": WriterResource(profile=_env_var("SP_WRITER", "template")),
        "editor": EditorResource(profile=_env_var("SP_EDITOR", "text_region"), also=_env_list("SP_EDITORS_ALSO", [])),
        "embedder": EmbedderResource(profile=_env_var("SP_EMBEDDER", "efficientnet_lite0")),
        "guards": GuardResource(profiles=_env_list("SP_GUARDS", DEFAULT_GUARDS)),
    }
