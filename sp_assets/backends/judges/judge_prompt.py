"""The prompt a chat VLM judge sends (built from a profile's template and the policy), and reading its
answer back into a verdict: shared by the in-process VLM judge and the model-server judge, so both ask the
same question and read the answer the same fail-closed way."""

from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

from sp_assets.backends.common.json_answers import INVALID, NONE_APPLYING, parse_judge_answer
from sp_assets.backends.common.vlm_runner import compile_prompt_template
from sp_assets.core.policy import Category, Policy
from sp_assets.core.record_types import Verdict

PLACEHOLDERS = {
    "rules": "the category's rules as prose (Category.rules_text())",
    "id": "category id, e.g. O2",
    "title": "category title",
    "slug": "category slug (partition key)",
    "forbids": "bullet list of what the category forbids",
    "allows": "bullet list of what the category allows",
    "policy": "policy name",
    "all_rules": "every category's rules as prose, one after another (for a judge of scope 'policy')",
    "categories": "every category written with the profile's category_block, a blank line between them",
    "category_options": 'the answer\'s category choices: "O1: <title>"|"O2: <title>"|...|"NA: None applying"',
}
PER_CATEGORY = frozenset({"rules", "id", "title", "slug", "forbids", "allows"})
POLICY_WIDE = frozenset({"all_rules", "categories"})
BLOCK_PLACEHOLDERS = {k: PLACEHOLDERS[k] for k in sorted(PER_CATEGORY)}
DEFAULT_CATEGORY_BLOCK = "$rules\n"
SCOPES = ("category", "policy")

DEFAULT_PROMPT = """You review images for safety under one category of a written policy.

$rules

Look at the image. If it shows anything the category says it should not contain, and none of the
cases it can contain explains it, the image is Unsafe. Otherwise the image is Safe.

Answer with one JSON object and nothing else, with these keys:
- "rating": "Unsafe" or "Safe"
- "category": "$id: $title" if the rating is Unsafe, otherwise "NA: None applying"
- "rationale": one or two sentences on what in the image decides the rating"""

_STRIP_LEAD = " \t\r\n\"'*`:{_\u2581\u0120"


def classify_token_text(text: str) -> str | None:
    """'unsafe' / 'safe' when a token could start that rating word (see ``VLMJudge``, score step 1)."""
    t = text.lstrip(_STRIP_LEAD).lower()
    if not t:
        return None
    for word in ("unsafe", "safe"):
        if word.startswith(t) or (t.startswith(word) and not t[len(word):len(word) + 1].isalpha()):
            return word
    return None

def score_from_logs(log_unsafe: float, log_safe: float) -> float | None:
    if math.isinf(log_unsafe) and math.isinf(log_safe):
        return None
    if math.isnan(log_unsafe) or math.isnan(log_safe):
        return None
    return 1.0 / (1.0 + math.exp(min(700.0, max(-700.0, log_safe - log_unsafe))))


def _check_scope(scope: str, template: str | None, profile_name: str) -> None:
    """A judge of scope 'policy' answers once for every category, so its prompt must not name one."""
    if scope not in SCOPES:
        raise ValueError(f"profile {profile_name!r}: scope {scope!r} is not one of {', '.join(SCOPES)}")
    if scope != "policy":
        return
    import string

    used = set(string.Template(template or DEFAULT_PROMPT).get_identifiers())
    if not template or used & PER_CATEGORY or not used & POLICY_WIDE:
        raise ValueError(
            f"profile {profile_name!r}: scope 'policy' judges each image once for every category, so its "
            f"prompt_template must ask about the whole policy ($all_rules or $categories) and name no single "
            f"category (it uses {', '.join(sorted('$' + u for u in used & PER_CATEGORY)) or 'neither'}). "
            "Write such a prompt, or leave scope at 'category'.")


def _bullets(rules: Sequence[str]) -> str:
    return "\n".join(f"- {r}" for r in rules)


def category_fields(category: Category) -> dict[str, str]:
    """What a per-category placeholder ($id, $forbids, ...) stands for."""
    return {"rules": category.rules_text(), "id": category.id, "title": category.title, "slug": category.slug,
            "forbids": _bullets(category.forbids), "allows": _bullets(category.allows)}


def category_options(policy: Policy) -> str:
    """The answer's category choices as LlavaGuard's JSON template lists them, "none applying" last."""
    return "|".join([f'"{c.id}: {c.title}"' for c in policy.categories] + [f'"{NONE_APPLYING}"'])


def _compile_block(text: str, profile_name: str) -> Any:
    import string

    block = string.Template(text)
    unknown = sorted(set(block.get_identifiers()) - set(BLOCK_PLACEHOLDERS))
    if unknown or not block.is_valid():
        raise ValueError(
            f"profile {profile_name!r}: category_block uses unknown placeholders {unknown or '(invalid $)'}; "
            f"known: {', '.join('$' + k for k in BLOCK_PLACEHOLDERS)} (write $$ for a literal $).")
    return block


class JudgePrompt:
    """The prompt a VLM judge sends, built from a profile's ``prompt_template`` (and ``category_block``)
    and the policy. No model is needed to build one: ``text(category)`` is the exact prompt.

    ``$categories`` is every policy category written with ``category_block`` (per-category placeholders,
    default ``$rules``), joined by a blank line; ``$category_options`` lists the answer's choices.
    """

    def __init__(self, policy: Policy, prompt_template: str | None = None, category_block: str | None = None,
                 scope: str = "category", profile_name: str = "vlm"):
        _check_scope(scope, prompt_template, profile_name)
        self.policy, self.scope = policy, scope
        self.template_text = prompt_template if prompt_template else DEFAULT_PROMPT
        self.template = compile_prompt_template(self.template_text, PLACEHOLDERS, profile_name)
        if category_block and "categories" not in self.template.get_identifiers():
            raise ValueError(
                f"profile {profile_name!r}: category_block is set but prompt_template never uses $categories, "
                "so the block would not appear in the prompt. Put $categories in the template or drop category_block.")
        self.block_text = category_block if category_block else DEFAULT_CATEGORY_BLOCK
        block = _compile_block(self.block_text, profile_name)
        self._whole = {
            "policy": policy.name,
            "all_rules": "\n\n".join(c.rules_text() for c in policy.categories),
            "categories": "\n".join(block.substitute(category_fields(c)) for c in policy.categories),
            "category_options": category_options(policy),
        }

    def text(self, category: Category) -> str:
        return self.template.substitute(**category_fields(category), **self._whole)

    def ask(self, category: Category | str) -> tuple[str, Category | None]:
        """The prompt for ``category``, and the category an unsafe answer that names none falls back on: the
        asked one, or None for a policy-wide question (its answer serves every category, so must name its own)."""
        if isinstance(category, str):
            category = self.policy.category(category)
        return self.text(category), (category if self.scope == "category" else None)

    def config(self) -> dict[str, Any]:
        """The prompt's part of the judge's config (hashed with the profile's params)."""
        return {"prompt_template": self.template_text,
                "prompt_template_sha256": hashlib.sha256(self.template_text.encode("utf-8")).hexdigest(),
                "category_block": self.block_text}



def prompt_sha256(policy: Policy, params: dict[str, Any], category: Category) -> str:
    """Hash of the exact prompt a judge with these profile params sends for ``category`` (the only way the
    policy reaches the model): with the default prompt, editing one category's rules redoes that category's
    answers only, and its title (listed among every prompt's answer options) all of them. A judge of scope
    'policy' sends one prompt for every category."""
    prompt = JudgePrompt(policy, params.get("prompt_template"), params.get("category_block"),
                         params.get("scope", "category"), "policy key")
    return hashlib.sha256(prompt.text(category).encode("utf-8")).hexdigest()


def answer_verdict(text: str, policy: Policy, asked: Category | None,
                   score_at: Any = lambda offset: None) -> Verdict:
    """The verdict a judge's text answer gives, read fail-closed (``json_answers.parse_judge_answer``):
    anything unreadable is ``invalid``, never ``safe``, with why in the rationale. ``asked`` is the category
    the question was about (None for a policy-wide question); ``score_at(offset)`` gives P(unsafe) from the
    model's probabilities at the rating value's character offset (None where it has none)."""
    parsed = parse_judge_answer(text, policy, asked)
    score = score_at(parsed.rating_offset) if parsed.rating_offset is not None else None
    if parsed.rating == INVALID:
        why = f"invalid answer ({parsed.problem})"
        rationale = f"{why}: {parsed.rationale}" if parsed.rationale else why
    else:
        rationale = parsed.rationale
        if parsed.notes:
            rationale = (rationale + " " if rationale else "") + "[" + "; ".join(parsed.notes) + "]"
    return Verdict(parsed.rating, parsed.category, score, rationale, text)
