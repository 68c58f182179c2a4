"""One sync or watch at a time: the lock refuses a second holder at once and names the first one's pid."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from provisioner import exitcodes, runlock


def test_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    with runlock.hold(tmp_path, "run", "sync"):
        with pytest.raises(runlock.Locked) as refused, runlock.hold(tmp_path, "run", "watch full run"):
            pass
        assert f"pid {os.getpid()}" in str(refused.value) and "(sync," in str(refused.value)
    with runlock.hold(tmp_path, "run", "sync"):  # released: the next one gets it
        pass


def test_cli_sync_refuses_before_touching_the_directory_while_a_run_holds_the_lock(tmp_path):
    (tmp_path / "pw").write_text("x")
    (tmp_path / "token").write_text("x")
    cfg = {
        "homeserver": {"url": "http://127.0.0.1:9", "server_name": "example.test", "admin_token_file": "token"},
        # Nothing listens on port 9: reaching the directory would fail with exit 3, not 9.
        "directory": {"uri": "ldap://127.0.0.1:9", "bind_dn": "cn=x", "bind_password_file": "pw",
                      "base_dn": "dc=x"},
        "sync": {"state_dir": "state"},
    }  # fmt: skip
    path = tmp_path / "civmatrix.yaml"
    path.write_text(yaml.safe_dump(cfg))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from provisioner import runlock\n"
         f"with runlock.hold({str(tmp_path / 'state')!r}, 'run', 'watch full run'):\n"
         "    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        out = subprocess.run([sys.executable, "-m", "provisioner.cli", "--config", str(path), "sync", "--quiet"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == exitcodes.LOCKED, out.stderr
        assert f"watch full run, pid {holder.pid}" in out.stderr
    finally:
        holder.kill()
        holder.wait()
