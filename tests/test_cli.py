"""The command line a user types: `dagster asset materialize -m sp_assets ... --partition o2_violence`, and the
card's `dagster asset materialize --select verified_pairs` from the repository root with the environment active."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sp_assets.core.policy import REPO_ROOT
from sp_assets.defs.cli_hints import MISSING_PARTITION, UNKNOWN_PARTITION, partition_hint
from sp_assets.defs.partitions import ACTIVE_POLICY
from tests.conftest import store_at

DAGSTER = str(Path(sys.executable).parent / "dagster")


def _materialize(select: str, home: Path, data: Path, *partition: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(home), "SP_DATA_ROOT": str(data), "SP_DEMO_UNSAFE": "2",
           "SP_DEMO_SAFE": "1"}
    cmd = [DAGSTER, "asset", "materialize", "-m", "sp_assets", "--select", select, *partition]
    return subprocess.run(cmd, cwd=home, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.full
def test_cli_materializes_verified_pairs_after_its_upstream(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # The project's own instance config, pools included; its relative folders land under `home`.
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    data = tmp_path / "data"
    upstream = _materialize("source_pool,policy_labels,edit_instructions,edited_images", home, data,
                            "--partition", "o2_violence")
    assert upstream.returncode == 0, upstream.stderr[-3000:]
    done = _materialize("verified_pairs", home, data, "--partition", "o2_violence")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    store = store_at(data)
    rows = store.rows("verified_pairs", {"category": "o2_violence"})
    assert rows and {r["category"] for r in rows} == {"o2_violence"}
    assert store.query("SELECT count(*) FROM verified_pairs WHERE category <> 'o2_violence'").item() == 0
    # The runs are recorded in the instance the UI would read.
    assert (home / ".dagster" / "storage").is_dir()


@pytest.mark.full
def test_cli_refuses_an_unknown_category(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    done = _materialize("source_pool", home, tmp_path / "data", "--partition", "o99_nothing")
    assert done.returncode != 0
    assert "o99_nothing" in done.stderr
    assert "Traceback" not in done.stderr and "o2_violence, o3_sexual" in done.stderr


# What `source .venv/bin/activate` exports after `make setup`: Dagster's CLI takes -m from it.
ACTIVATED = {"DAGSTER_MODULE_NAME": "sp_assets.definitions"}
OTHER_TARGETS = ("DAGSTER_PYTHON_FILE", "DAGSTER_PACKAGE_NAME", "DAGSTER_ATTRIBUTE", "DAGSTER_WORKING_DIRECTORY")


def _card_command(tmp_path: Path, *args: str, command: tuple[str, ...] = (DAGSTER, "asset", "materialize")
                  ) -> subprocess.CompletedProcess:
    """`dagster asset materialize ARGS` without -m, from the repository root; data and runs under tmp_path."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k not in OTHER_TARGETS}
    env.update(ACTIVATED, DAGSTER_HOME=str(home), SP_DATA_ROOT=str(tmp_path / "data"), SP_DEMO_UNSAFE="2",
               SP_DEMO_SAFE="1")
    return subprocess.run([*command, *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.full
def test_card_command_finds_the_code_location_without_m(tmp_path):
    done = _card_command(tmp_path, "--select", "source_pool", "--partition", "o2_violence")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    assert store_at(tmp_path / "data").rows("source_images", {"category": "o2_violence"})


@pytest.mark.full
def test_card_command_without_a_category_lists_them_and_the_command(tmp_path):
    done = _card_command(tmp_path, "--select", "verified_pairs")
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in out and "RUN_START" not in out, out[-3000:]
    assert all(slug in out for slug in ACTIVE_POLICY.slugs)
    first, last = ACTIVE_POLICY.slugs[0], ACTIVE_POLICY.slugs[-1]
    assert f"dagster asset materialize --select verified_pairs --partition {first}\n" in out
    assert f"dagster asset materialize --select verified_pairs --partition-range {first}...{last}\n" in out


@pytest.mark.full
def test_dg_launch_finds_the_project_and_answers_a_missing_category(tmp_path):
    """`dg launch` (dagster-dg-cli, the dev extra) reads [tool.dg] in pyproject.toml: the same runs, the same hint."""
    dg = (str(Path(sys.executable).parent / "dg"), "launch")
    done = _card_command(tmp_path, "--assets", "source_pool", "--partition", "o2_violence", command=dg)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert store_at(tmp_path / "data").rows("source_images", {"category": "o2_violence"})
    missing = _card_command(tmp_path, "--assets", "verified_pairs", command=dg)
    out = missing.stdout + missing.stderr
    assert missing.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert f"dg launch --assets verified_pairs --partition {ACTIVE_POLICY.slugs[0]}\n" in out


@pytest.mark.parametrize("command, given", [
    (["dagster", "asset", "materialize", "-m", "sp_assets", "--select", "*", "--partition", "o99"], "o99"),
    (["dagster", "asset", "materialize", "--partition=o99", "--select", "*"], "o99"),
    (["dg", "launch", "--assets", "*", "--partition-range", "o99...o9_disasters"], "o99...o9_disasters"),
])
def test_an_unknown_category_is_named_and_dropped_from_the_suggested_command(command, given):
    hint = partition_hint(f"must have a PartitionsDefinition {UNKNOWN_PARTITION} `x`", command)
    assert f"{given!r} is not a category" in hint
    kept = [a for a in command if "o99" not in a and a not in ("--partition", "--partition-range")]
    assert "  " + shlex.join([*kept, "--partition", ACTIVE_POLICY.slugs[0]]) in hint.splitlines()
    assert "o99" not in hint.split("\n", 1)[1]


def test_other_errors_keep_their_traceback():
    assert partition_hint("Failure condition: something else", ["dagster", "asset", "materialize"]) is None
    assert partition_hint(f"Failure condition: Asset has partitions, but {MISSING_PARTITION}", ["dagster"])
