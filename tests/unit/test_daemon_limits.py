"""The daemon on a host whose limits are used up by others (a Kubernetes node, typically)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_a_full_inotify_table_does_not_keep_the_daemon_from_converging(tmp_path: Path) -> None:
    """Review finding: with max_user_instances used up (128 for root by default, often exhausted on
    Kubernetes nodes) `ipvland run` exited at start with "fatal: inotify instance limit reached", and
    systemd restarted it until its start limit: nothing was ever converged. Reproduced for real: a user
    namespace whose inotify limit is 1 (watchdog's observer needs more)."""
    config = tmp_path / "config.yaml"
    config.write_text("version: 1\nparents: {}\n")
    state = tmp_path / "state"
    daemon = (f"echo 1 > /proc/sys/user/max_inotify_instances && ip link set lo up && "
              f"exec {sys.executable} -m ipvland run -c {config} --state-dir {state} --interval 1")
    proc = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net", "--mount", "sh", "-c", daemon],
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        status = state / "status.json"
        for _ in range(200):
            if status.exists() and json.loads(status.read_text()).get("reconciles", 0) >= 2:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            subprocess.run(["sleep", "0.1"], check=False)
        data = json.loads(status.read_text())
        assert data["reconciles"] >= 2, "the daemon did not keep reconciling"
        assert "cannot watch the config files" in (data["config"].get("watch_error") or "")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "inotify instance limit reached" in err and "fatal" not in err
