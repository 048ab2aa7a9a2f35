"""tests/vm's choice between KVM and emulation, on a copy of the script with a fake `vng`.

The machines that run these tests have a /dev/kvm that qemu cannot use: either qemu aborts at once
("failed to set MSR 0x10a", exit 255, before the guest prints anything) or the guest hangs without
a word. tests/vm must then run the command under emulation and remember the broken KVM. Booting a
real VM takes 30-60 s under emulation, so these tests run the real script (copied into a scratch
tree, where its .venv and .vm are the scratch ones) against a fake `vng` that behaves like the
two failures, then runs the guest command here like a guest would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Mimics virtme-ng: --disable-kvm selects emulation; the --exec command is the guest's. Each boot
# is logged ("kvm" or "tcg") so the test sees which attempts ran.
FAKE_VNG = r"""#!/usr/bin/env bash
accel=kvm cmd=
while (($#)); do
    case $1 in
        --disable-kvm) accel=tcg; shift ;;
        --exec) cmd=$2; shift 2 ;;
        *) shift ;;
    esac
done
echo "$accel" >>"$FAKE_LOG"
if [[ $accel == kvm ]]; then
    case $FAKE_KVM in
        abort) echo "qemu-system-x86_64: error: failed to set MSR 0x10a" >&2; exit 255 ;;
        hang) echo $$ >"$FAKE_LOG.hung"; exec sleep 600 ;;
    esac
elif (($(grep -c tcg "$FAKE_LOG") <= ${FAKE_TCG_HANGS:-0})); then
    exec sleep 600  # an emulated boot that hangs before the guest's first line
fi
exec env -i PATH="$PATH" bash -c "$cmd"  # a guest starts with a clean environment
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A scratch repo with tests/vm, a fake vng in .venv/bin and fakes of what tests/vm checks for."""
    (tmp_path / "tests").mkdir()
    shutil.copy(REPO / "tests" / "vm", tmp_path / "tests" / "vm")
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    fakes = tmp_path / "fakebin"
    fakes.mkdir()
    scripts = {venv_bin / "vng": FAKE_VNG,
               fakes / "qemu-system-x86_64": "#!/bin/sh\necho 'QEMU emulator version 0.0 (fake)'\n"}
    for tool in ("busybox", "modprobe", "ip", "ping", "nft"):
        scripts[fakes / tool] = "#!/bin/sh\nexit 0\n"
    for path, text in scripts.items():
        path.write_text(text)
        path.chmod(0o755)
    (tmp_path / "vmlinuz").write_bytes(b"not a kernel")
    (tmp_path / "kvm").write_bytes(b"")  # opens read-write, as a usable /dev/kvm does
    return tmp_path


def run_vm(tree: Path, fake_kvm: str, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "PATH": f"{tree / 'fakebin'}:{os.environ['PATH']}",
        "FAKE_KVM": fake_kvm,
        "FAKE_LOG": str(tree / "boots.log"),
        "IPVLAND_VM_KERNEL": str(tree / "vmlinuz"),
        "IPVLAND_VM_KVM_DEV": str(tree / "kvm"),
        "IPVLAND_VM_KVM_GRACE": "2",
        "IPVLAND_VM_BOOT_GRACE": "2",
    }
    environ.pop("IPVLAND_VM_KVM", None)
    environ.update(env)
    return subprocess.run([str(tree / "tests" / "vm"), "--timeout", "60", "--exec", command],
                          env=environ, capture_output=True, text=True, timeout=60, check=False)


def boots(tree: Path) -> list[str]:
    log = tree / "boots.log"
    return log.read_text().split() if log.exists() else []


def test_kvm_that_aborts_at_once_falls_back_to_emulation_and_is_remembered(tree: Path) -> None:
    done = run_vm(tree, "abort", "echo guest-ran; exit 7")
    assert done.returncode == 7, done.stderr  # the guest command's status, not qemu's 255
    assert "guest-ran" in done.stdout
    assert boots(tree) == ["kvm", "tcg"]
    assert "the KVM boot ended (exit 255) before the guest said a word" in done.stderr
    broken = (tree / ".vm" / "kvm-broken").read_text().splitlines()
    assert len(broken) == 1 and broken[0].endswith(str(tree / "vmlinuz"))
    # The next run goes straight to emulation, and the memory keeps one line per key.
    again = run_vm(tree, "abort", "true")
    assert again.returncode == 0, again.stderr
    assert boots(tree) == ["kvm", "tcg", "tcg"]
    assert (tree / ".vm" / "kvm-broken").read_text().splitlines() == broken


def test_kvm_guest_that_hangs_is_killed_and_emulation_runs(tree: Path) -> None:
    start = time.monotonic()
    done = run_vm(tree, "hang", "echo guest-ran")
    assert done.returncode == 0, done.stderr
    assert "guest-ran" in done.stdout
    assert boots(tree) == ["kvm", "tcg"]
    assert "no sign of life from the KVM guest in 2s" in done.stderr
    assert time.monotonic() - start < 30
    assert (tree / ".vm" / "kvm-broken").exists()
    # The hung KVM "guest" (its whole process group) is gone.
    hung = int((tree / "boots.log.hung").read_text())
    assert not Path(f"/proc/{hung}").exists()


def test_working_kvm_runs_the_command_once(tree: Path) -> None:
    done = run_vm(tree, "ok", "echo guest-ran; exit 4")
    assert done.returncode == 4
    assert boots(tree) == ["kvm"]
    assert not (tree / ".vm" / "kvm-broken").exists()


def test_forced_kvm_does_not_fall_back(tree: Path) -> None:
    done = run_vm(tree, "abort", "echo guest-ran", IPVLAND_VM_KVM="1")
    assert done.returncode == 3
    assert boots(tree) == ["kvm"]
    assert "no fallback" in done.stderr and "guest-ran" not in done.stdout


def test_campaign_knobs_reach_the_guest(tree: Path) -> None:
    done = run_vm(tree, "ok", 'echo "seed=$IPVLAND_CAMPAIGN_SEED enable=$IPVLAND_CAMPAIGN_ENABLE"',
                  IPVLAND_CAMPAIGN_SEED="42", IPVLAND_CAMPAIGN_ENABLE="a b;c")
    assert done.returncode == 0, done.stderr
    assert "seed=42 enable=a b;c" in done.stdout


def test_an_emulated_boot_that_hangs_is_killed_and_booted_again(tree: Path) -> None:
    # Seen twice in one afternoon: qemu idle, the guest silent, until the VM's timeout (45 min) killed
    # the whole run with no result.
    done = run_vm(tree, "abort", "echo guest-ran; exit 5", FAKE_TCG_HANGS="2")
    assert done.returncode == 5, done.stderr
    assert done.stdout.count("guest-ran") == 1
    assert boots(tree) == ["kvm", "tcg", "tcg", "tcg"]
    assert done.stderr.count("no sign of life from the guest in 2s: boot") == 2


def test_emulated_boots_that_all_hang_fail_after_three(tree: Path) -> None:
    done = run_vm(tree, "abort", "echo guest-ran", FAKE_TCG_HANGS="9")
    assert done.returncode == 3 and "guest-ran" not in done.stdout
    assert boots(tree) == ["kvm", "tcg", "tcg", "tcg"]
    assert "the VM did not boot (no sign of life from the guest in 2s)" in done.stderr
