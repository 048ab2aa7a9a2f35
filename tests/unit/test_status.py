"""The status file (atomic writes), its rendering, and sd_notify over a real unix datagram socket."""

from __future__ import annotations

import grp
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ipvland import status


def sample(**over: object) -> dict[str, object]:
    s: dict[str, object] = {
        "schema": status.SCHEMA, "pid": os.getpid(), "started": status.now_iso(), "updated": status.now_iso(),
        "config": {"path": "/etc/ipvland/config.yaml", "generation": 3,
                   "sources": ["/etc/ipvland/config.yaml", "/etc/ipvland/config.d/10-web.yaml"],
                   "loaded": status.now_iso(), "error": None},
        "last_reconcile": {"started": status.now_iso(), "duration": 0.1234, "result": "ok", "trigger": ["resync"],
                           "changes": ["+ link web0 ipvlan l2 on eth0"], "errors": [], "conflicts": [],
                           "pending": []},
        "reconciles": 7, "changes_total": 12, "drift": {"events": 4, "last": None}, "pending": [],
    }
    s.update(over)
    return s


def test_write_then_read_roundtrip_leaves_no_temp_file(tmp_path: Path) -> None:
    s = sample()
    path = status.write(tmp_path / "state", s)
    assert path == tmp_path / "state" / "status.json"
    assert status.read(tmp_path / "state") == s
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["status.json"]
    assert path.stat().st_mode & 0o777 == 0o640  # error messages quote config excerpts: not world-readable
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o750


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    big = sample(pending=[f"link dev{i} waits for parent eth9" for i in range(2000)])
    status.write(tmp_path, big)
    done = threading.Event()
    bad: list[Exception] = []

    def reader() -> None:
        while not done.is_set():
            try:
                status.read(tmp_path)
            except Exception as e:  # a torn read would be a JSONDecodeError
                bad.append(e)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(60):
        status.write(tmp_path, {**big, "reconciles": i})
    done.set()
    t.join()
    assert bad == []
    assert status.read(tmp_path)["reconciles"] == 59


def test_read_rejects_a_foreign_file(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not an ipvland status file"):
        status.read(tmp_path)


def test_summary_is_one_line_and_names_the_config_error() -> None:
    s = sample(config={"path": "c", "generation": 2, "sources": [], "loaded": None,
                       "error": {"since": None, "errors": ["c.yaml:4:3: parents.eth0.mode: bad", "c.yaml:9:1: x"]}},
               pending=["link a waits for parent eth9"])
    line = status.summary(s)
    assert "\n" not in line
    assert "config generation 2" in line
    assert "1 pending" in line
    assert "config error: c.yaml:4:3: parents.eth0.mode: bad (+1 more)" in line
    assert "ok, 1 change(s)" in status.summary(sample())
    no_config = sample(last_reconcile={"result": "no-config", "duration": 0})
    assert "nothing enforced" in status.summary(no_config)
    assert "not reconciled yet" in status.summary(sample(last_reconcile=None))


def test_render_text_and_json() -> None:
    s = sample(config={"path": "/c.yaml", "generation": 1, "sources": ["/c.yaml"], "loaded": "t0",
                       "error": {"since": "t", "errors": ["/c.yaml:3:5: parents: expected a mapping"]}},
               pending=["link db0: parent eth9 is missing"])
    s["last_reconcile"]["errors"] = [{"object": "+ address 10.0.0.2/24 dev web0", "error": "EADDRINUSE"}]  # type: ignore[index]
    s["last_reconcile"]["probes"] = ["probe netns web -> 192.0.2.1: ok (0.3 ms, try 1/3)"]  # type: ignore[index]
    text = status.render(s, as_json=False)
    assert "running" in text and "STALE" not in text.upper()
    assert "/c.yaml:3:5: parents: expected a mapping" in text
    assert "the last good config is still enforced" in text
    assert "+ link web0 ipvlan l2 on eth0" in text
    assert "! + address 10.0.0.2/24 dev web0: EADDRINUSE" in text
    assert "link db0: parent eth9 is missing" in text
    assert "probe netns web -> 192.0.2.1: ok" in text
    assert json.loads(status.render(s, as_json=True)) == s
    assert "s in " not in text  # a full reconcile: no scope shown
    s["last_reconcile"]["scope"] = [None, "web"]  # type: ignore[index]
    assert "s in host, web, result ok" in status.render(s, as_json=False)


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert status.main(tmp_path, as_json=False) == 1
    assert "no status file" in capsys.readouterr().err
    status.write(tmp_path, sample())
    assert status.main(tmp_path, as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["reconciles"] == 7
    status.write(tmp_path, sample(pid=2**22 + 12345))  # above pid_max: no such process
    assert status.main(tmp_path, as_json=False) == 1
    assert "NOT RUNNING" in capsys.readouterr().out
    bad = sample()
    bad["last_reconcile"]["result"] = "errors"  # type: ignore[index]
    status.write(tmp_path, bad)
    assert status.main(tmp_path, as_json=False) == 1


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def test_sd_notify_path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify")
    with _receiver(path) as rx:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert status.sd_notify("READY=1", "STATUS=all good")
        assert rx.recv(4096) == b"READY=1\nSTATUS=all good"


def test_sd_notify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ipvland-test-{os.getpid()}-{threading.get_ident()}"
    with _receiver("\0" + name) as rx:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert status.sd_notify("WATCHDOG=1")
        assert rx.recv(4096) == b"WATCHDOG=1"


def test_sd_notify_without_systemd_is_a_quiet_no(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert status.sd_notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert status.sd_notify("READY=1") is False


def test_with_no_valid_config_status_says_nothing_is_enforced_and_not_the_opposite() -> None:
    s = sample(config={"path": "/c.yaml", "generation": 0, "sources": [], "loaded": None,
                       "error": {"since": "t", "errors": ["/c.yaml: cannot read: No such file or directory"]}},
               last_reconcile={"result": "no-config", "duration": 0, "started": "t", "trigger": ["start"]})
    text = status.render(s, as_json=False)
    assert "nothing is enforced" in text and "nothing enforced" in text
    assert "still enforced" not in text


# ---------------------------------------------------------------- who may read it

ROOT = Path(__file__).resolve().parents[2]
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, setpriv)")


def status_as(user: str, group: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", "--inh-caps=-all",
                           sys.executable, "-m", "ipvland", "status", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


@AS_ROOT
def test_state_dir_and_status_belong_to_the_group_when_it_exists(public_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status, "GROUP", "daemon")  # stands in for `ipvland` (gid 1 on Debian)
    state = public_dir / "state"
    path = status.write(state, sample())
    gid = grp.getgrnam("daemon").gr_gid
    assert (state.stat().st_gid, state.stat().st_mode & 0o777) == (gid, 0o750)
    assert (path.stat().st_gid, path.stat().st_mode & 0o777) == (gid, 0o640)
    member = status_as("nobody", "daemon", state)  # a member of the group, not root
    assert member.returncode == 0, member.stderr
    assert f"ipvland: running, pid {os.getpid()}" in member.stdout
    other = status_as("nobody", "nogroup", state)  # anybody else
    assert other.returncode == 1 and other.stdout == ""
    assert other.stderr == (f"ipvland status: {path}: permission denied: only root and the members of group "
                            "ipvland may read the daemon's status\n")


@AS_ROOT
def test_without_the_group_the_status_is_root_only(public_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status, "GROUP", "ipvland-no-such-group")
    state = public_dir / "state"
    path = status.write(state, sample())
    assert (path.stat().st_gid, path.stat().st_mode & 0o777) == (os.getgid(), 0o640)
    assert status_as("nobody", "nogroup", state).returncode == 1
    assert status.main(state, as_json=False) == 0  # root still reads it


def test_an_existing_world_readable_state_dir_is_closed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    status.prepare_dir(state)
    assert state.stat().st_mode & 0o777 == 0o750


def test_the_group_lookup_is_kept_while_the_group_file_is_unchanged(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue 13): getgrnam() at every status write cost 0.1 s of each drift repair."""
    groups = tmp_path / "group"
    groups.write_text("ipvland:x:1234:\n")
    monkeypatch.setattr(status, "GROUP_FILE", str(groups))
    monkeypatch.setattr(status, "_group_cache", None)
    calls: list[str] = []
    db = {"ipvland": 1234}

    def getgrnam(name: str) -> Any:
        calls.append(name)
        if name not in db:
            raise KeyError(name)
        return grp.struct_group((name, "x", db[name], []))

    monkeypatch.setattr(status.grp, "getgrnam", getgrnam)
    assert [status.group_id() for _ in range(5)] == [1234] * 5
    assert calls == ["ipvland"]  # looked up once
    db["ipvland"] = 4321
    groups.write_text("ipvland:x:4321:\nother:x:1:\n")  # groupmod: the file changes
    assert status.group_id() == 4321 and len(calls) == 2
    monkeypatch.setattr(status, "GROUP", "ipvland-other")  # another name is another lookup
    assert status.group_id() is None and len(calls) == 3
    now = [1000.0]
    monkeypatch.setattr(status.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(status, "_group_cache", None)
    db["ipvland-other"] = 77  # from an NSS source that is not the file: seen after GROUP_TTL
    assert status.group_id() == 77 and len(calls) == 4
    db["ipvland-other"] = 78
    now[0] += status.GROUP_TTL / 2
    assert status.group_id() == 77
    now[0] += status.GROUP_TTL
    assert status.group_id() == 78 and len(calls) == 5
