"""Benchmark: reading N people from a real slapd, our reader vs the C client ldapsearch, in one run.

    python bench/ldap_read.py --people 25000

Both read the same entries with the same paged-results control (page size 1000) and the same attributes;
each is timed ``--repeat`` times and the best is kept (the machine is noisy; ratios are what we compare).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.config import parse_config
from provisioner.core.directory import interpret
from provisioner.embedded.slapd import EmbeddedSlapd
from provisioner.ldap_reader import DirectoryReader, _person_attributes, read_directory_sync
from provisioner.sample import generate_directory


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=25_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    directory = generate_directory(args.people, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        slapd = EmbeddedSlapd(Path(tmp) / "slapd")
        t0 = time.perf_counter()
        slapd.load_ldif(directory.to_ldif())
        load = time.perf_counter() - t0
        slapd.start()
        try:
            cfg = parse_config(
                {
                    "homeserver": {"url": "http://127.0.0.1:1", "server_name": "example.test"},
                    "directory": {
                        "uri": slapd.uri, "bind_dn": slapd.service_dn, "base_dn": slapd.suffix,
                        "bind_password_file": str(slapd.service_password_file),
                        "disabled_filter": "(employeeType=disabled)",
                    },
                }
            )  # fmt: skip
            attrs = _person_attributes(cfg.directory)
            c_times, same_times, py_times, interp_times = [], [], [], []
            n_c = n_py = n_same = 0
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                with DirectoryReader(cfg.directory) as reader:
                    same, _reason = reader.search_all(cfg.directory.filter, attrs)
                same_times.append(time.perf_counter() - t0)
                n_same = len(same)
                t0 = time.perf_counter()
                out = subprocess.run(
                    ["ldapsearch", "-x", "-LLL", "-H", slapd.uri, "-D", slapd.service_dn,
                     "-y", str(slapd.service_password_file), "-b", slapd.suffix, "-E", "pr=1000/noprompt",
                     cfg.directory.filter, *attrs],
                    capture_output=True, check=True,
                )  # fmt: skip
                c_times.append(time.perf_counter() - t0)
                n_c = sum(1 for line in out.stdout.splitlines() if line.startswith(b"dn:"))
                t0 = time.perf_counter()
                result = read_directory_sync(cfg.directory)
                py_times.append(time.perf_counter() - t0)
                n_py = len(result.people)
                t0 = time.perf_counter()
                snap = interpret(result, cfg.directory_policy(), skip_log=False)
                interp_times.append(time.perf_counter() - t0)
            c, same_t, py, it = min(c_times), min(same_times), min(py_times), min(interp_times)
            print(f"people generated        {args.people}")
            print(f"slapadd load            {load:.2f} s")
            print(f"ldapsearch (C), paged   {c:.3f} s  ({n_c} entries)")
            print(f"civmatrix, same search  {same_t:.3f} s  ({n_same} entries)")
            print(f"ratio same search / C   {same_t / c:.2f}x")
            print(f"civmatrix full read     {py:.3f} s  ({n_py} people; plus the unit and disabled searches)")
            print(f"  interpretation        {it:.3f} s  ({len(snap.people)} people, {len(snap.units)} units)")
            print(f"ratio full read / C     {py / c:.2f}x")
        finally:
            slapd.stop()


if __name__ == "__main__":
    main()
