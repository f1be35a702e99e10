"""The command line a user types: `dagster asset materialize -m sp_assets ... --partition o2_violence`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sp_assets.core.policy import REPO_ROOT
from tests.conftest import store_at

DAGSTER = str(Path(sys.executable).parent / "dagster")


def _materialize(select: str, home: Path, data: Path, *partition: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(home), "SP_DATA_ROOT": str(data), "SP_DEMO_UNSAFE": "2",
           "SP_DEMO_SAFE": "1"}
    cmd = [DAGSTER, "asset", "materialize", "-m", "sp_assets", "--select", select, *partition]
    return subprocess.run(cmd, cwd=home, env=env, capture_output=True, text=True, timeout=600)


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


def test_cli_refuses_an_unknown_category(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    done = _materialize("source_pool", home, tmp_path / "data", "--partition", "o99_nothing")
    assert done.returncode != 0
    assert "o99_nothing" in done.stderr
