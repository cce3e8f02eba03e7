"""glibc tuning: a freed big block goes back to the OS, also after the first one (a real process)."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import sys
from crawler.memory import map_big_blocks

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

if sys.argv[1] == "tuned":
    assert map_big_blocks()
before = rss_mb()
for size in (20, 19, 18):  # each a page-sized body, freed before the next
    block = b"x" * (size << 20)
    del block
print(rss_mb() - before)
"""


@pytest.mark.parametrize("mode", ["tuned", "default"])
def test_a_freed_body_leaves_no_resident_memory_only_when_tuned(mode: str) -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc is not glibc's")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's own defaults
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60,
                          check=True, env=env)
    kept_mb = float(done.stdout)
    if mode == "tuned":
        assert kept_mb < 4
    else:  # glibc's moving threshold: what the tuning is for (if this fails, glibc changed)
        assert kept_mb > 15
