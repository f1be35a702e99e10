"""The scene-text judge's text classifier: sentence-model features (all-mpnet-base-v2 by default, a word
TF-IDF beside them when ``bow_weight`` > 0), an RBF SVC (or logistic-regression) head fitted on the
policy's rules and its labelled examples (``core.judge_examples``). Offline, deterministic, text only."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from sp_assets.backends.common.threads import single_threaded
from sp_assets.backends.embedders.sentence import (  # noqa: F401 - the judge's encoders, by name
    DEFAULT_SENTENCE_MODEL, MINILM, MPNET, SENTENCE_MODELS, check_pinned_files, load_sentence_model, normalise,
    sentence_model_folder,
)
from sp_assets.backends.judges.rbf_head import HEAD_FORMAT, RBFMachine, head_metadata, load_head, save_head
from sp_assets.core.cache import cache_dir
from sp_assets.core.hashing import sha256_json
from sp_assets.core.judge_examples import JudgeExamples, examples_path, load_examples
from sp_assets.core.policy import Policy
from sp_assets.core.progress import Throttle, heartbeat, report
from sp_assets.storage.vector_cache import VectorCache, text_key

log = logging.getLogger(__name__)

SAFE_LABEL = "safe"
INVALID_LABEL = "invalid"

# Function words carry no policy signal and would dominate the mean word embedding of short signs.
# Negations stay: "no", "not", "never" turn a topic word into a prohibition.
_STOPWORDS = frozenset(
    "a an the of to in on at for and or is are be by with your you we our their them they it this "
    "that all here there".split()
)


# The third block of features: the text as the words of a sign.
SIGN_FRAME = "a sign that says: {}"
# How training strings are encoded and cached (``PolicyTextHead.canonical_vectors``); part of each key.
VECTOR_SCHEME = "per-text-v1"
VECTOR_BATCH = 32
# Progress roles (``core.progress.report``): the build's three steps (encoder loaded, training vectors
# ready, head fitted) and, on a cold cache, the training strings encoded.
BUILD, BUILD_STEPS, ENCODING = "judge_build", 3, "judge_examples_encoded"
# Encoding in worker processes (``encode_workers.py``) pays off from this many batches (a cold cache:
# hundreds of batches; each worker loads the encoder once, a few seconds).
PARALLEL_MIN_BATCHES = 64
ENCODE_WORKERS_ENV_VAR = "SP_ENCODE_WORKERS"


def encode_workers() -> int:
    """Processes that encode a cold cache: ``SP_ENCODE_WORKERS``, else the CPUs this process may use
    (at most 8: each holds a copy of the encoder)."""
    raw = os.environ.get(ENCODE_WORKERS_ENV_VAR, "").strip()
    if raw.isdigit():
        return int(raw)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(usable, 8))


def embedding_cache_dir() -> Path:
    """Where built judges keep their training embeddings (``SP_CACHE_DIR``, default ~/.cache/safetypairs)."""
    return cache_dir() / "text_head"


def _content_words(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9']+", text)
    content = [w for w in words if w not in _STOPWORDS]
    return content or words


def _file_sha256(path: str) -> str:
    from sp_assets.backends.common.model_store import cached_sha256  # the per-process cache check_pinned uses

    return cached_sha256(Path(path))


def files_sha256(paths: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode())
        h.update(bytes.fromhex(_file_sha256(p)))
    return h.hexdigest()


NO_EXAMPLES_JUDGES = "llavaguard or qwen_vl_judge (a VLM, your weights), shieldgemma2, or manifest (your own labels)"


def judge_examples(policy: Policy, examples: str | None) -> JudgeExamples:
    """The labelled texts the head learns from: the profile's ``examples`` file (a path relative to the
    policy's folder), else ``<policy name>.examples.jsonl`` beside the policy."""
    if examples:
        path = Path(examples).expanduser()
        path = path if path.is_absolute() else policy.path.parent / path
    else:
        path = examples_path(policy.path)
    if not path.is_file():
        raise FileNotFoundError(
            f"The scene-text judge learns from labelled example texts and expects them in {path}, which is not "
            f"there. Write that file (one JSON object per line: text, label 'violating' or 'allowed', category "
            f"slug; policies/default.examples.jsonl is one, policies/default.examples.md says how it was made), "
            f"set the scene_text profile's 'examples' parameter to yours, or use a judge that needs no examples: "
            f"{NO_EXAMPLES_JUDGES} (SP_JUDGE=<profile>).")
    return load_examples(path, set(policy.slugs))


def training_examples(policy: Policy, examples: JudgeExamples, *, use_rules: bool = True,
                      use_replacements: bool = False) -> tuple[list[str], list[str]]:
    """The (normalised text, label) rows the head learns from, in policy order, without repeats.

    Per category: its ``violating`` examples (+ ``forbids`` when ``use_rules``) label the category;
    its ``allowed`` examples (+ ``allows`` when ``use_rules``, + ``replacement_texts`` when
    ``use_replacements``) label 'safe'. Within a category, rows keep the examples file's order.
    """
    texts: list[str] = []
    labels: list[str] = []
    seen: set[tuple[str, str]] = set()

    def add(items: Sequence[str], label: str) -> None:
        for item in items:
            key = (normalise(item), label)
            if key[0] and key not in seen:
                seen.add(key)
                texts.append(key[0])
                labels.append(label)

    for cat in policy.categories:
        add(examples.texts(cat.slug, "violating"), cat.slug)
        add(cat.forbids if use_rules else (), cat.slug)
        add(examples.texts(cat.slug, "allowed"), SAFE_LABEL)
        add(cat.allows if use_rules else (), SAFE_LABEL)
        add(cat.replacement_texts if use_replacements else (), SAFE_LABEL)
    by_text: dict[str, set[str]] = {}
    for text, label in zip(texts, labels):
        by_text.setdefault(text, set()).add(label)
    clash = sorted(t for t, ls in by_text.items() if SAFE_LABEL in ls and len(ls) > 1)
    if clash:
        raise ValueError(
            f"{examples.path} (with the rules of {policy.path}): these texts are labelled both violating and "
            f"allowed: {clash}; remove them from one of the two."
        )
    if SAFE_LABEL not in labels or len(set(labels)) < 2:
        raise ValueError(
            f"{examples.path}: the scene-text judge needs 'allowed' rows (or allows rules) and at least one "
            "category with 'violating' rows (or forbids rules) to learn from."
        )
    return texts, labels


@dataclass(frozen=True)
class HeadSettings:
    """How the head is fitted; every field is part of the judge's config.

    kind:        'svc' (RBF support-vector machine, Platt-scaled probabilities) or 'logreg'
    C:           inverse regularisation strength
    safe_weight: the safe class's total weight relative to a violating category's (each category
                 weighs the same whatever its number of rows)
    safe_prior:  P(safe) is multiplied by this and the row renormalised before the decision rule;
                 below 1 the head needs more evidence to call a text safe
    bow_weight:  scale of the word TF-IDF block beside the sentence-model features (0: none)

    The defaults are what ``benchmarks/judge_cv.py`` chose on the default policy (see its docstring);
    ``SceneTextJudge`` takes its own defaults from here.
    """

    kind: str = "svc"
    C: float = 30.0
    safe_weight: float = 1.0
    safe_prior: float = 0.4
    bow_weight: float = 0.0


def fit_bow(texts: Sequence[str]):
    """The word TF-IDF the head sees beside the embeddings: words of two or more letters seen in at
    least two training texts, sublinear counts. Framing words ("report", "no", "awareness") are shared
    across categories and carry over to unseen phrasings better than in the embedding."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(min_df=2, sublinear_tf=True, dtype=np.float32).fit(list(texts))


def fit_head(x: np.ndarray, y: np.ndarray, settings: HeadSettings):
    """Fit the head on features ``x`` and class indices ``y`` (0 = safe). Deterministic for fixed data:
    lbfgs, or libsvm with a fixed seed for its probability calibration."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    counts = np.bincount(y, minlength=int(y.max()) + 1).astype(float)
    per_class = np.where(np.arange(len(counts)) == 0, settings.safe_weight, 1.0) / np.maximum(counts, 1)
    per_class *= len(y) / per_class[y].sum()  # mean row weight 1: C means the same whatever the weights
    with single_threaded():  # the same model in every worker, whatever its thread count
        if settings.kind == "svc":
            svc = SVC(C=settings.C, kernel="precomputed", probability=True, random_state=0,
                      class_weight={i: float(w) for i, w in enumerate(per_class)})
            return RBFMachine.fit(svc, x, y)
        head = LogisticRegression(C=settings.C, max_iter=5000, tol=1e-6)
        return head.fit(x, y, sample_weight=per_class[y])


def head_probs(head, x: np.ndarray, n_classes: int, safe_prior: float) -> np.ndarray:
    """Class probabilities from a fitted head (columns by class index), P(safe) scaled by ``safe_prior``."""
    out = np.zeros((len(x), n_classes))
    if len(x):
        out[:, head.classes_] = head.predict_proba(x)  # columns follow class indices, not classes_ order
        out[:, 0] *= safe_prior
        out /= out.sum(axis=1, keepdims=True)
    return out


def decision(probs: np.ndarray, classes: Sequence[str], unsafe_threshold: float, safe_threshold: float) -> str:
    """The decision rule (fail closed; P(unsafe) = 1 - P(safe), ``classes[0]`` is 'safe'):

    - the most likely class is a violating category and P(unsafe) >= unsafe_threshold -> that category
    - the most likely class is 'safe' and P(safe) >= safe_threshold -> 'safe'
    - anything else (the head is torn) -> 'invalid'
    """
    p_safe = float(probs[0])
    best = int(np.argmax(probs))
    if best != 0 and 1.0 - p_safe >= unsafe_threshold:
        return classes[best]
    if best == 0 and p_safe >= safe_threshold:
        return SAFE_LABEL
    return INVALID_LABEL


class PolicyTextHead:
    """Class probabilities for short texts: P(safe), P(category) for each violating category.

    ``classes[0]`` is 'safe'; the rest are the policy's categories that have examples. Features (see
    ``features``): the sentence embedding, the mean embedding of the content words, the embedding of
    the text framed as a sign and, when ``bow_weight`` is above 0 (off by default), a word TF-IDF
    fitted on the training texts; the head is fitted on the policy's examples (``HeadSettings``), or
    read back (``rbf_head``) from the file shipped beside them or this machine's cache when one was
    built for exactly these rows, settings and encoder weights (``head_key``; ``reuse_head=False``
    fits it again).
    """

    def __init__(self, policy: Policy, examples: JudgeExamples | None = None, settings: HeadSettings | None = None, *,
                 use_rules: bool = True,
                 use_replacements: bool = False, batch_size: int = 64, model_path: str | None = None,
                 min_known_share: float = 0.5, sentence_model: str = DEFAULT_SENTENCE_MODEL,
                 reuse_head: bool = True):
        self.policy = policy
        self.examples = examples if examples is not None else judge_examples(policy, None)
        self.settings = settings or HeadSettings()
        self.use_rules, self.use_replacements = bool(use_rules), bool(use_replacements)
        self.batch_size = int(batch_size)
        self.min_known_share = float(min_known_share)
        self.sentence_model = sentence_model
        self.model_dir = sentence_model_folder(model_path, sentence_model)
        began = time.monotonic()
        report(BUILD, 0, BUILD_STEPS, 0.0)
        with heartbeat(BUILD, 0, BUILD_STEPS, began):  # checking the pinned files and loading: seconds
            check_pinned_files(sentence_model, self.model_dir, model_path)
            self._encoder = load_sentence_model(self.model_dir)
        report(BUILD, 1, BUILD_STEPS, time.monotonic() - began)
        # sentence-transformers 6 renamed the getter; keep working on 3.x-5.x too.
        get_dim = getattr(self._encoder, "get_embedding_dimension", None)
        get_dim = get_dim or self._encoder.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 384)
        weights = sorted(str(p) for p in self.model_dir.glob("*.safetensors"))
        self.encoder_sha256 = files_sha256(tuple(weights)) if weights else "unknown"
        self.train_texts, self.train_labels = training_examples(
            policy, self.examples, use_rules=self.use_rules, use_replacements=self.use_replacements)
        present = set(self.train_labels)
        self.classes: list[str] = [SAFE_LABEL] + [c.slug for c in policy.categories if c.slug in present]
        self._bow = fit_bow(self.train_texts)
        self.head_key = sha256_json({"format": HEAD_FORMAT, "encoder_sha256": self.encoder_sha256, **self.config()})
        self.head_source = "fitted"
        self._head = self._stored_head() if reuse_head else None
        if self._head is None:
            with heartbeat(BUILD, 1, BUILD_STEPS, began):  # cached vectors read; new strings encoded (own lines)
                x = self.training_features()
            report(BUILD, 2, BUILD_STEPS, time.monotonic() - began)
            y = np.array([self.classes.index(label) for label in self.train_labels])
            with heartbeat(BUILD, 2, BUILD_STEPS, began):  # the SVC fit: tens of seconds on 2 cores
                self._head = fit_head(x, y, self.settings)
            if isinstance(self._head, RBFMachine):
                save_head(self.cached_head_path(), self._head, self.head_key, self.head_info())
        report(BUILD, BUILD_STEPS, BUILD_STEPS, time.monotonic() - began)

    def shipped_head_path(self) -> Path:
        """Where a head fitted on these examples may ship: ``default.examples.jsonl`` ->
        ``default.examples.head.safetensors`` (``python -m sp_assets.backends.judges.build_head``)."""
        name = self.examples.path.name
        return self.examples.path.with_name((name[:-len(".jsonl")] if name.endswith(".jsonl") else name)
                                            + ".head.safetensors")

    def cached_head_path(self) -> Path:
        return embedding_cache_dir() / "heads" / f"{self.head_key[:32]}.safetensors"

    def _stored_head(self) -> RBFMachine | None:
        """The head built for ``head_key``: shipped beside the examples, else fitted earlier on this
        machine (None: fit it). A shipped head built for other rows or settings is passed over, saying so."""
        if self.settings.kind != "svc":
            return None
        shipped = self.shipped_head_path()
        head = load_head(shipped, self.head_key)
        if head is not None:
            self.head_source = f"shipped:{shipped.name}"
            return head
        if shipped.is_file():
            log.info("%s was built for other examples, rules, settings or encoder weights (built from %s); "
                     "fitting the head on this machine (python -m sp_assets.backends.judges.build_head "
                     "rebuilds the shipped file).", shipped, head_metadata(shipped).get("info", "?"))
        head = load_head(self.cached_head_path(), self.head_key)
        if head is not None:
            self.head_source = "cache"
        return head

    def head_info(self) -> dict[str, Any]:
        """How a fitted head was made (stored beside its arrays; not part of its key)."""
        from importlib.metadata import version

        return {"examples": self.examples.path.name, "examples_sha256": self.examples.sha256,
                "policy": self.policy.path.name, "policy_rules_sha256": self.policy.rules_sha256,
                "encoder": self.sentence_model, "encoder_sha256": self.encoder_sha256,
                "n_rows": len(self.train_texts), "support_vectors": int(self._head.n_support.sum()),
                **{pkg: version(pkg) for pkg in ("scikit-learn", "sentence-transformers", "torch", "numpy")}}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence embeddings, one row per text."""
        with single_threaded():  # the same vectors in every worker, whatever its thread count
            vectors = self._encoder.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                           normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embedding, mean embedding of the content words and the embedding of the text framed as
        a sign (``SIGN_FRAME``), each unit length.

        The word block keeps strong single-word cues ("nude", "ammo", "starve") from being diluted in a
        short sign's sentence embedding; the framed block reads the words as a message someone put up
        (cross-validation on the training rows: allowed rows rated safe 0.909 -> 0.917 with fewer unsafe
        rows rated safe). Sentences, framed sentences and words go through one batched call.
        """
        return self._assembled(texts, self.encode)

    def _assembled(self, texts: Sequence[str], encode) -> np.ndarray:
        """The three blocks of ``embeddings``, every string encoded by ``encode`` (a list in, rows out)."""
        if not texts:
            return np.zeros((0, 3 * self.dim), dtype=np.float32)
        sentences = [normalise(t) for t in texts]
        words = [_content_words(s) for s in sentences]
        vocab = sorted({w for ws in words for w in ws})
        n = len(sentences)
        vecs = encode(sentences + [SIGN_FRAME.format(s) for s in sentences] + vocab)
        sent, framed, word_vec = vecs[:n], vecs[n: 2 * n], dict(zip(vocab, vecs[2 * n:]))
        means = np.stack(
            [np.mean([word_vec[w] for w in ws], axis=0) if ws else sent[i] for i, ws in enumerate(words)]
        )
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        return np.hstack([sent, means, framed]).astype(np.float32)

    def training_embeddings(self) -> np.ndarray:
        """The training texts' embeddings, each string's vector from this machine's cache when an earlier
        build encoded it.

        Encoding thousands of examples on one thread takes most of a cold build (minutes on 2 cores with
        all-mpnet-base-v2), and every worker builds the judge, so each string's vector is kept under
        ``SP_CACHE_DIR`` (default ``~/.cache/safetypairs``), keyed by the encoder's weights and the string
        (``storage.vector_cache``): a policy with one more example encodes that example's strings only.
        Strings are encoded in ``canonical_vectors``' fixed batches, so the vectors are the same bits
        however the cache was filled.
        """
        cache = VectorCache(embedding_cache_dir() / f"vectors-{self.encoder_sha256[:16]}-{self.dim}.sqlite", self.dim)

        def cached(strings: list[str]) -> np.ndarray:
            unique = sorted(set(strings))
            keys = {t: text_key(VECTOR_SCHEME, t) for t in unique}
            found = cache.get(list(keys.values()))
            missing = [t for t in unique if keys[t] not in found]
            if missing:
                fresh = self.canonical_vectors(missing)
                cache.put((keys[t], v) for t, v in zip(missing, fresh))
                found.update({keys[t]: v for t, v in zip(missing, fresh)})
            return np.stack([found[keys[t]] for t in strings]) if strings else np.zeros((0, self.dim), np.float32)

        return self._assembled(self.train_texts, cached)

    def canonical_vectors(self, strings: Sequence[str]) -> np.ndarray:
        """Vectors of ``strings`` computed so that each string's bits depend on the string alone.

        A transformer's output for a text shifts in the last bits with the batch it runs in (padding,
        the matrix shapes). Here every batch holds ``VECTOR_BATCH`` strings of one token length (no
        padding), a short batch filled up with copies of its first string: each string always meets the
        same shapes, whichever strings it is encoded with, so a cache filled bit by bit equals one filled
        at once (tests/test_scene_text.py checks it). Grouping by length also spares the padding.

        Many strings (a cold cache) are shared out among ``encode_workers()`` processes, each loading
        the encoder once and encoding whole batches on one thread: the same bits, in a fraction of the
        time on a machine with several cores.
        """
        began, throttle = time.monotonic(), Throttle()
        total = len(strings)
        report(ENCODING, 0, total, 0.0)
        tokenize = getattr(self._encoder, "preprocess", None) or self._encoder.tokenize  # renamed in ST 6
        lengths = tokenize(list(strings))["attention_mask"].sum(dim=1).tolist()
        by_length: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            by_length.setdefault(int(n), []).append(i)
        batches = [rows[start:start + VECTOR_BATCH] for n in sorted(by_length)
                   for rows in [by_length[n]] for start in range(0, len(rows), VECTOR_BATCH)]
        padded = [[strings[i] for i in part] + [strings[part[0]]] * (VECTOR_BATCH - len(part)) for part in batches]
        out = np.zeros((total, self.dim), dtype=np.float32)
        done = 0
        for index, vectors in self._encode_batches(padded):
            part = batches[index]
            out[part] = vectors[: len(part)]
            done += len(part)
            if throttle.due(ENCODING, done, total):
                report(ENCODING, done, total, time.monotonic() - began)
        return out

    def _encode_batches(self, batches: list[list[str]]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, vectors) of every batch: here, or in worker processes when there are many (any batch a
        failed worker did not deliver is encoded here)."""
        workers = min(encode_workers(), len(batches) // PARALLEL_MIN_BATCHES)
        if workers < 2:
            yield from ((i, self.encode(batch)) for i, batch in enumerate(batches))
            return
        from sp_assets.backends.judges.encode_workers import encode_in_workers

        for i, vectors in encode_in_workers(batches, str(self.model_dir), self.batch_size, self.dim, workers):
            yield i, (vectors if vectors is not None else self.encode(batches[i]))

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """``embeddings`` beside ``bow_weight`` times the word TF-IDF (unit length per text)."""
        return self._with_bow(texts, self.embeddings(texts))

    def training_features(self) -> np.ndarray:
        """The features of the training rows, in ``train_texts`` order (vectors from the cache)."""
        return self._with_bow(self.train_texts, self.training_embeddings())

    def _with_bow(self, texts: Sequence[str], dense: np.ndarray) -> np.ndarray:
        if not self.settings.bow_weight:
            return dense
        bow = self._bow.transform([normalise(t) for t in texts]).toarray()
        return np.hstack([dense, self.settings.bow_weight * bow]).astype(np.float32)

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, columns in ``classes`` order."""
        if not len(texts):
            return np.zeros((0, len(self.classes)))
        return head_probs(self._head, self.features(texts), len(self.classes), self.settings.safe_prior)

    def legible(self, text: str) -> bool:
        """Whether a text reads as words: at least ``min_known_share`` of its words of three or more
        letters look like words (see ``_wordlike``).

        OCR of a torn poster, a pattern or a logo gives strings like "XQZV BRWK"; the head would still
        give them probabilities, so they must be caught before anyone believes one."""
        words = [w for w in re.findall(r"[a-z]+", normalise(text)) if len(w) >= 3]
        if not words:
            return True  # short words and numbers ("24/7", "no 4"): nothing to doubt
        known = sum(self._wordlike(w) for w in words)
        return known >= self.min_known_share * len(words)

    def _wordlike(self, word: str) -> bool:
        """In the sentence model's vocabulary (at most a stem and one suffix piece), or pronounceable:
        a vowel and no run of four consonants ("naloxone", "gynaecology" pass; "xqzv", "tlmph" do not)."""
        if len(self._encoder.tokenizer.tokenize(word)) <= 2:
            return True
        return bool(re.search(r"[aeiouy]", word)) and not re.search(r"[^aeiouy]{4}", word)

    def config(self) -> dict[str, Any]:
        examples = hashlib.sha256(
            json.dumps([self.train_texts, self.train_labels], ensure_ascii=False).encode("utf-8")
        ).hexdigest()
        return {
            **asdict(self.settings),
            "features": "sentence+mean_content_words+sign_frame" + ("+word_tfidf" if self.settings.bow_weight else ""),
            "sign_frame": SIGN_FRAME,
            "training_vectors": f"{VECTOR_SCHEME}/batch-{VECTOR_BATCH}",
            "sentence_model": self.sentence_model,
            "use_rules": self.use_rules,
            "use_replacements": self.use_replacements,
            "min_known_share": self.min_known_share,
            "classes": list(self.classes),
            "n_examples": len(self.train_texts),
            "examples_sha256": examples,
            **({"support_vectors": "float16"} if self.settings.kind == "svc" else {}),
        }

    def close(self) -> None:
        self._encoder = None
