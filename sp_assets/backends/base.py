"""The small interfaces every backend implements, and the records they exchange.

A stage module talks only to these interfaces; a profile in ``resources/*.yaml`` picks the
implementation. Images are RGB ``PIL.Image.Image`` objects; boxes are pixel coordinates
``(x0, y0, x1, y1)`` with x1/y1 exclusive.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator, Sequence

import numpy as np
import yaml
from PIL import Image

from sp_assets.core.hashing import sha256_json
from sp_assets.core.policy import Category, Policy
from sp_assets.core.record_types import (  # noqa: F401 - the records the interfaces exchange
    RATINGS, Box, EditResult, Instruction, ModelInfo, TextRegion, Verdict,
)

class Backend(ABC):
    """Shared by all backends: a name, a resolved config and what model it runs."""

    info: ModelInfo
    # What part of the policy the backend's answers depend on: "policy" (every category's rules), "category"
    # (the asked category's own rules) or "none" (see ``policy_key``). Memo keys carry that part's hash, so a
    # policy edit invalidates exactly the answers that read what changed.
    policy_dependency: str = "none"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free model memory. Called when a run ends."""

    def each(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        """``fn`` over ``items``, results in order: one after another here; a backend that waits on a model
        server runs them concurrently, up to its requests in flight (the writer's rows of a batch, say)."""
        return [fn(item) for item in items]


def policy_part_sha256(category: Category) -> str:
    """Hash of one category's own rules: what a per-category answer depends on."""
    return sha256_json(asdict(category))


def policy_key(cls: type, policy: Policy, category: Category, params: dict[str, Any] | None = None) -> str:
    """The hash of what answers of backend class ``cls`` read from the policy, for the memo key.

    A class may say exactly (a classmethod ``policy_sha256(policy, category, params)``: a VLM judge hashes
    the prompt it sends, the scene-text judge the rules and its examples file); otherwise its
    ``policy_dependency`` decides: every category's rules, the asked category's, or none.
    """
    exact = getattr(cls, "policy_sha256", None)
    if exact is not None:
        return exact(policy, category, dict(params or {}))
    dependency = getattr(cls, "policy_dependency", "none")
    if dependency == "policy":
        return policy.rules_sha256
    if dependency == "category":
        return policy_part_sha256(category)
    return ""


def takes_policy(cls: type) -> bool:
    """Whether answers of backend class ``cls`` read the policy (asked under another policy, they may change):
    a judge, a prompted guard, or a class that says so with ``policy_dependency`` or ``policy_sha256``."""
    return getattr(cls, "policy_sha256", None) is not None or getattr(cls, "policy_dependency", "none") != "none"


class Judge(Backend):
    # "category": an answer holds for the category it was asked about; "policy": one answer (asked
    # over the whole policy) serves every category, so an image is judged once, not once per category.
    # A profile can set it with the parameter ``scope`` where the implementation accepts one.
    scope: str = "category"
    policy_dependency = "policy"

    @abstractmethod
    def judge(self, images: Sequence[Image.Image], category: Category) -> list[Verdict]:
        """Rate each image under ``category``. One verdict per image, same order."""


class TwoStep:
    """A backend whose work splits into reading an image, which does not depend on the category (done
    once per image), and deciding from that reading per category (cheap). ``judge`` / ``predict`` are
    ``decide(read(images), category)``.
    """

    @classmethod
    def reader_key(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Everything that changes a reading, from the profile's parameters alone (no model is loaded):
        hashed into the reading's memo key, so profiles that read alike share their readings."""
        raise NotImplementedError

    @classmethod
    def make_reader(cls, params: dict[str, Any]) -> Any:
        """Optionally, an object whose ``read`` gives the same readings as the backend's, built without what
        only ``decide`` needs (a worker that only reads then loads less). None: build the whole backend."""
        return None

    def read(self, images: Sequence[Image.Image]) -> list[Any]:
        """One JSON-able reading per image."""
        raise NotImplementedError

    def decide(self, readings: Sequence[Any], category: Category) -> list[Verdict]:
        """One verdict per reading under ``category``."""
        raise NotImplementedError


class InstructionWriter(Backend):
    policy_dependency = "category"  # the category's edit guidance and replacement texts

    @abstractmethod
    def write(
        self,
        image: Image.Image,
        verdict: Verdict,
        category: Category,
        n_variants: int,
        seed: int,
    ) -> list[Instruction]:
        """Write up to ``n_variants`` instructions that remove the violation and keep the rest."""

    def write_null(self, image: Image.Image, verdict: Verdict, category: Category, seed: int) -> Instruction | None:
        """A control instruction: run the image through the editor changing nothing the policy cares
        about, so the benchmark can pair an edited unsafe image with an edited safe one. The text is
        data (``writers/control_edit.yaml``)."""
        text = control_edit()
        return Instruction(text=text["instruction"], target={"null_edit": True}, keep=text["keep"], variant=0)


@lru_cache(maxsize=1)
def control_edit() -> dict[str, str]:
    """The control edit's instruction and keep clause, from ``backends/writers/control_edit.yaml``."""
    raw = resources.files("sp_assets.backends.writers").joinpath("control_edit.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(raw)
    return {"instruction": str(doc["instruction"]).strip(), "keep": str(doc["keep"]).strip()}


def check_edit_args(images: Sequence[Any], instructions: Sequence[Any], seeds: Sequence[Any]) -> None:
    """Editors take one instruction and one seed per image."""
    if not (len(images) == len(instructions) == len(seeds)):
        raise ValueError(
            f"edit() needs one instruction and one seed per image; got {len(images)} images, "
            f"{len(instructions)} instructions, {len(seeds)} seeds"
        )


class Editor(Backend):
    @abstractmethod
    def edit(
        self,
        images: Sequence[Image.Image],
        instructions: Sequence[Instruction],
        seeds: Sequence[int],
    ) -> list[EditResult]:
        """Apply each instruction to its image. Results come back at the source image's size."""


class Embedder(Backend):
    @abstractmethod
    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return an (n, d) float32 array of L2-normalised image embeddings."""


class Guard(Backend):
    """A classifier evaluated on the benchmark: gives a rating and a score (P(unsafe))."""

    name: str

    @abstractmethod
    def predict(self, images: Sequence[Image.Image], category: Category) -> list[Verdict]:
        """One verdict per image; score is the probability of 'unsafe' where the guard has one."""


class RecordJudge(Judge):
    """A judge that decides from stored records (e.g. human labels in a manifest), not pixels.

    It can label source images but cannot judge a new edit, so verification needs a pixel judge.
    """

    @abstractmethod
    def judge_records(self, records: Sequence[dict[str, Any]], category: Category) -> list[Verdict]:
        """One verdict per source record (rows of the ``source_images`` table)."""


@dataclass
class SourceItem:
    """One file (or generated image) a source offers for a category.

    ``reason`` is set when the source already knows the item cannot be used (a corrupt file, a path
    outside the root, a manifest row naming an unknown category): it is quarantined with ``detail``.
    ``columns`` are the source-specific columns of ``source_images`` (manifest labels, demo recipe).
    """

    ref: str
    data: bytes | None
    suffix: str = ".img"
    width: int | None = None
    height: int | None = None
    format: str | None = None
    reason: str | None = None
    detail: str = ""
    columns: dict[str, Any] = field(default_factory=dict)


# The demo pool's size per category, unless the settings say otherwise (SP_DEMO_UNSAFE, SP_DEMO_SAFE).
DEMO_UNSAFE_PER_CATEGORY, DEMO_SAFE_PER_CATEGORY = 12, 6


@dataclass(frozen=True)
class SourceOptions:
    """The run settings a source reads (from the settings resource)."""

    policy: Policy
    seed: int = 0
    source_dir: str = ""
    manifest: str = ""
    demo_unsafe_per_category: int = DEMO_UNSAFE_PER_CATEGORY
    demo_safe_per_category: int = DEMO_SAFE_PER_CATEGORY
    max_image_pixels: int = 40_000_000
    max_file_bytes: int = 64 * 1024 * 1024


class Source(Backend):
    """Where source images come from: a profile in ``resources/sources.yaml`` picks one."""

    origin: str  # recorded in source_images.origin

    @abstractmethod
    def scan(self, category: Category, options: SourceOptions) -> Iterator[SourceItem]:
        """Every item the source offers for ``category``, usable or not (in = accepted + rejected)."""

    @abstractmethod
    def fingerprint(self, category: Category, options: SourceOptions) -> Any:
        """A cheap JSON-able value that changes whenever ``scan`` would give other items: the stage
        takes the category in again only then."""
