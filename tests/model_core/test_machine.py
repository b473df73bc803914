"""The machine recorded in the manifest and checked by the server."""
import re

from model_core.machine import compatibility_problems, current_machine


def test_current_machine_describes_this_machine():
    machine = current_machine()
    assert re.fullmatch(r"linux_x86_64|linux_aarch64|[a-z0-9_]+", machine["platform"])
    assert re.fullmatch(r"glibc \d+\.\d+|unknown|\S+ \S+", machine["libc"])
    assert machine["cpu"]


def test_compatibility_rules():
    here = {"platform": "linux_x86_64", "libc": "glibc 2.36", "cpu": "x"}
    assert compatibility_problems("linux_x86_64", "glibc 2.36", here) == []
    assert compatibility_problems("linux_x86_64", "glibc 2.31", here) == []       # older glibc: fine
    assert "2.38" in compatibility_problems("linux_x86_64", "glibc 2.38", here)[0]
    assert "aarch64" in compatibility_problems("linux_aarch64", "glibc 2.36", here)[0]
    assert compatibility_problems("linux_x86_64", "musl 1.2", here)
    assert compatibility_problems(**{"platform_tag": current_machine()["platform"],
                                     "libc": current_machine()["libc"]}) == []
