"""Safety policies as data: load, validate and hash a policy YAML file.

The active policy decides the category partitions of every asset. Which file is active comes
from the ``SP_POLICY`` environment variable (a path), falling back to ``policies/default.yaml``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from sp_assets.core.hashing import sha256_json

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY_PATH = REPO_ROOT / "policies" / "default.yaml"
POLICY_ENV_VAR = "SP_POLICY"

_SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_REQUIRED_CATEGORY_FIELDS = ("id", "slug", "title", "forbids", "allows", "edit_guidance")


class PolicyError(ValueError):
    """A policy file that cannot be used. The message names the file, the entry and the fix."""


@dataclass(frozen=True)
class Category:
    id: str
    slug: str
    title: str
    forbids: tuple[str, ...]
    allows: tuple[str, ...]
    edit_guidance: str
    replacement_texts: tuple[str, ...] = ()

    def rules_text(self) -> str:
        """The category's rules as plain prose, for prompts and reports."""
        lines = [f"{self.id} {self.title}.", "Should not contain:"]
        lines += [f"- {rule}" for rule in self.forbids]
        lines.append("Can contain:")
        lines += [f"- {rule}" for rule in self.allows]
        return "\n".join(lines)


@dataclass(frozen=True)
class Policy:
    name: str
    path: Path
    sha256: str
    categories: tuple[Category, ...]
    description: str = ""
    version: str = ""
    _by_slug: dict[str, Category] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def rules_sha256(self) -> str:
        """Hash of what a whole-policy answer reads: the name and every category's rules (not the file's
        comments or layout; the judge's examples are another file, see ``core.judge_examples``)."""
        return sha256_json({"name": self.name, "categories": [asdict(c) for c in self.categories]})

    @property
    def slugs(self) -> list[str]:
        return [c.slug for c in self.categories]

    def category(self, key: str) -> Category:
        """Look a category up by slug or id (``o2_violence`` or ``O2``, case-insensitive)."""
        if not self._by_slug:
            for c in self.categories:
                self._by_slug[c.slug] = c
                self._by_slug[c.id.lower()] = c
        found = self._by_slug.get(str(key).strip().lower())
        if found is None:
            raise KeyError(
                f"category {key!r} is not in policy {self.name!r} ({self.path}); "
                f"known categories: {', '.join(self.slugs)}"
            )
        return found


def active_policy_path() -> Path:
    raw = os.environ.get(POLICY_ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_POLICY_PATH
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path)


def load_active_policy() -> Policy:
    return load_policy(active_policy_path())


def _text_list(value: Any, where: str, key: str, path: Path, required: bool) -> tuple[str, ...]:
    if value is None:
        if required:
            raise PolicyError(f"{path}: {where} is missing '{key}'; add a list of short sentences.")
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PolicyError(
            f"{path}: {where} field '{key}' must be a list of non-empty strings, got {value!r}."
        )
    if required and not value:
        raise PolicyError(f"{path}: {where} field '{key}' is empty; give at least one entry.")
    for row, v in enumerate(value):
        _check_encodable(v, f"{where} field '{key}' row {row}", path)
    return tuple(v.strip() for v in value)


def _check_encodable(text: str, where: str, path: Path) -> None:
    """Text must be valid Unicode: YAML reads "\\ud83c\\udf7a" (JSON's escape of an emoji) as two lone
    surrogates, which hash, encode and print nowhere."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start:exc.end].encode("unicode_escape").decode("ascii")
        raise PolicyError(
            f"{path}: {where} {text!r} holds surrogate code points ({bad}), not a character. Write the character "
            f"itself, or escape it whole as \\U0001XXXX (e.g. \\U0001F37A, not \\ud83c\\udf7a)."
        ) from None


def _document(text: str, path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PolicyError(f"{path}: not valid YAML{where}: {exc}. Fix the syntax and reload.") from exc
    if not isinstance(doc, dict):
        raise PolicyError(
            f"{path}: expected a mapping with 'name' and 'categories' at the top, got {type(doc).__name__}."
        )
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PolicyError(f"{path}: top-level 'name' is missing; give the policy a short name.")
    if not isinstance(doc.get("categories"), list) or not doc["categories"]:
        raise PolicyError(f"{path}: 'categories' must be a non-empty list of category entries.")
    return doc


def _check_identity(entry: dict[str, Any], index: int, where: str, path: Path, seen_ids: dict[str, int],
                    seen_slugs: dict[str, int]) -> tuple[str, str]:
    """The category's id and slug, checked: every required field present, the slug a valid key, both unique."""
    for key in _REQUIRED_CATEGORY_FIELDS:
        if entry.get(key) in (None, "", []):
            raise PolicyError(f"{path}: {where} is missing required field '{key}'.")
    cat_id, slug = str(entry["id"]).strip(), str(entry["slug"]).strip()
    if not _SLUG_RE.match(slug):
        raise PolicyError(
            f"{path}: {where} slug {slug!r} is not a valid partition key; use lowercase "
            "letters, digits and underscores, starting with a letter (e.g. 'o2_violence')."
        )
    for kind, value, seen in (("id", cat_id.lower(), seen_ids), ("slug", slug, seen_slugs)):
        if value in seen:
            shown = cat_id if kind == "id" else slug
            raise PolicyError(
                f"{path}: {where} repeats {kind} {shown!r} already used by categories"
                f"[{seen[value]}]; give every category its own {kind}."
            )
        seen[value] = index
    return cat_id, slug


def _category(entry: dict[str, Any], cat_id: str, slug: str, where: str, path: Path) -> Category:
    if "judge_examples" in entry:
        raise PolicyError(
            f"{path}: {where} holds 'judge_examples'; the scene-text judge's examples now live in their own "
            f"file beside the policy ({path.stem}.examples.jsonl), so that editing them leaves every other "
            f"answer valid. Move them with: python -m sp_assets.core.judge_examples extract {path}"
        )
    guidance = entry["edit_guidance"]
    if not isinstance(guidance, str):
        raise PolicyError(f"{path}: {where} 'edit_guidance' must be text, got {guidance!r}.")
    return Category(
        id=cat_id,
        slug=slug,
        title=str(entry["title"]).strip(),
        forbids=_text_list(entry.get("forbids"), where, "forbids", path, True),
        allows=_text_list(entry.get("allows"), where, "allows", path, True),
        edit_guidance=" ".join(guidance.split()),
        replacement_texts=_text_list(entry.get("replacement_texts"), where, "replacement_texts", path, False),
    )


def parse_policy(text: str, path: Path) -> Policy:
    """Validate a policy document. ``path`` is only used in error messages and provenance."""
    doc = _document(text, path)
    categories: list[Category] = []
    seen_ids: dict[str, int] = {}
    seen_slugs: dict[str, int] = {}
    for index, entry in enumerate(doc["categories"]):
        where = f"categories[{index}]"
        if not isinstance(entry, dict):
            raise PolicyError(f"{path}: {where} must be a mapping, got {entry!r}.")
        if isinstance(entry.get("id"), str):
            where = f"categories[{index}] (id {entry['id']!r})"
        cat_id, slug = _check_identity(entry, index, where, path, seen_ids, seen_slugs)
        categories.append(_category(entry, cat_id, slug, where, path))
    return Policy(
        name=doc["name"].strip(),
        path=path,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        categories=tuple(categories),
        description=" ".join(str(doc.get("description", "")).split()),
        version=str(doc.get("version", "")),
    )


def load_policy(path: str | os.PathLike[str]) -> Policy:
    path = Path(path)
    if not path.is_file():
        raise PolicyError(
            f"{path}: policy file not found. Point {POLICY_ENV_VAR} at a YAML policy "
            f"(see {DEFAULT_POLICY_PATH.relative_to(REPO_ROOT)})."
        )
    return parse_policy(path.read_text(encoding="utf-8"), path)
