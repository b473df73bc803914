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


GRAVITON2 = ["atomics", "fphp", "asimdhp", "asimdrdm", "asimddp", "lrcpc"]   # Neoverse N1's hwcaps
GRAVITON4 = GRAVITON2 + ["sve", "bf16", "i8mm", "sve2"]


def test_a_library_tuned_for_a_newer_graviton_is_refused_on_an_older_one():
    graviton2 = {"platform": "linux_aarch64", "libc": "glibc 2.36", "cpu": "x", "features": GRAVITON2}
    graviton4 = {**graviton2, "features": GRAVITON4}
    assert compatibility_problems("linux_aarch64", "glibc 2.36", graviton2, cpu="neoverse-n1") == []
    problem = compatibility_problems("linux_aarch64", "glibc 2.36", graviton2, cpu="neoverse-v1")
    assert problem == ["library is tuned for neoverse-v1 (Graviton3); this CPU lacks sve, bf16, i8mm "
                       "(an older Graviton?)"]
    assert compatibility_problems("linux_aarch64", "glibc 2.36", graviton4, cpu="neoverse-v1") == []
    assert compatibility_problems("linux_aarch64", "glibc 2.36", graviton4, cpu="neoverse-v2") == []
    assert "does not know" in compatibility_problems("linux_aarch64", "glibc 2.36", graviton4, cpu="apple-m9")[0]
    # Another architecture is refused for that, whatever the tuning.
    here = {"platform": "linux_x86_64", "libc": "glibc 2.36", "cpu": "x", "features": []}
    assert compatibility_problems("linux_aarch64", "glibc 2.36", here, cpu="neoverse-v1") == [
        "library was compiled for linux_aarch64, this machine is linux_x86_64"]


def test_cpu_features_are_read_from_the_auxiliary_vector():
    import platform

    from model_core.machine import CPU_FEATURES, cpu_features

    features = cpu_features()
    if platform.machine() in ("aarch64", "arm64"):
        assert set(CPU_FEATURES["neoverse-n1"]) & set(features)   # every arm64 server CPU has some
    else:
        assert features == []
