"""CPU feature detection picks presets from what this machine reports, never a hard-coded ISA."""

import platform

import pytest

import deploykit.hardware as hw


def test_preset_follows_the_flags(monkeypatch):
    monkeypatch.setattr(hw.platform, "machine", lambda: "x86_64")
    for flags, preset in [({"avx2"}, "avx2"), ({"avx2", "avx512_vnni"}, "avx512_vnni"),
                          ({"avx2", "amx_int8"}, "avx512_vnni")]:
        monkeypatch.setattr(hw, "cpu_flags", lambda f=flags: frozenset(f))
        assert hw.quant_preset() == preset
    monkeypatch.setattr(hw.platform, "machine", lambda: "aarch64")
    assert hw.quant_preset() == "arm64"


def test_bf16_native_needs_amx_or_avx512_bf16(monkeypatch):
    # "cpu": the CPU's own flags decide, also on a machine with a GPU
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert hw.bf16_supported("cpu")


def test_describe_reports_this_machine():
    d = hw.describe()
    assert d["cores"] >= 1 and d["quant_preset"] in {"avx2", "avx512_vnni", "arm64"}
    assert isinstance(d["isa"], list)


def test_bf16_is_not_native_without_the_flags(monkeypatch):
    import torch

    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not hw.bf16_supported("cpu")
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert hw.bf16_supported("cpu")


def test_bf16_on_a_gpu_asks_the_gpu_not_the_cpu(monkeypatch):
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    for native in (True, False):
        monkeypatch.setattr(hw, "cuda_bf16_native", lambda n=native: n)
        assert hw.bf16_supported("cuda") is native and hw.bf16_supported("gpu") is native


def test_int8_settings_follow_the_preset_auto_resolves_to(monkeypatch):
    from deploykit.quant.int8 import Int8Settings

    for preset, reduce_range in (("avx2", True), ("avx512_vnni", False), ("arm64", False)):
        monkeypatch.setattr(hw, "quant_preset", lambda p=preset: p)
        settings = Int8Settings.for_preset("auto")
        assert (settings.preset, settings.reduce_range) == (preset, reduce_range)


def test_glibc_library_is_none_on_another_c_library(monkeypatch):
    monkeypatch.setattr(hw.platform, "libc_ver", lambda: ("", ""))
    assert hw.glibc_library("c") is None
    monkeypatch.setattr(hw.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(hw.platform, "system", lambda: "Darwin")
    assert hw.glibc_library("c") is None


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc")
def test_glibc_library_opens_glibc_here():
    assert hasattr(hw.glibc_library("c"), "mallopt")
    assert hw.glibc_library("no-such-library-anywhere") is None


@pytest.mark.parametrize("elsewhere, threads, n_cores, warned", [
    (1.0, 2, 2, True),     # a busy loop beside a 2-thread training on 2 cores
    (2.0, 2, 2, True),     # a second training
    (0.3, 2, 2, False),    # background noise
    (1.0, 1, 2, False),    # one thread fits in the free core
    (1.0, 4, 8, False),    # plenty of free cores
    (6.0, 4, 8, True),
])
def test_shared_cores_warning_only_where_the_threads_do_not_fit(elsewhere, threads, n_cores, warned):
    line = hw.shared_cores_warning("finetune", elsewhere, threads, n_cores)
    assert (line is not None) == warned
    if warned:
        assert line.startswith(f"finetune: warning: other processes keep {elsewhere:.1f} of this machine's {n_cores}")


@pytest.mark.core_sampling
def test_busy_elsewhere_counts_the_mask_and_leaves_out_this_process(monkeypatch):
    # CPU 0 and 1 in the mask, CPU 2 outside it; over one second the mask's CPUs did 1.5 s of work, 1.0 s of it
    # this process's own: 0.5 core elsewhere. CPU 2's 1 s of work is another container's, not ours to count.
    from types import SimpleNamespace

    import psutil

    ticks = iter([0, 1])

    def cpu_times(percpu):
        t = next(ticks)
        cpu = lambda user: SimpleNamespace(user=user, nice=0.0, system=0.0, irq=0.0, softirq=0.0)  # noqa: E731
        return [cpu(10 + 1.0 * t), cpu(10 + 0.5 * t), cpu(10 + 1.0 * t)]

    own = iter([5.0, 6.0])
    monkeypatch.setattr(hw.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(psutil, "cpu_times", cpu_times)
    monkeypatch.setattr(psutil, "Process", lambda: SimpleNamespace(cpu_times=lambda: SimpleNamespace(
        user=next(own), system=0.0)))
    clock = iter([100.0, 101.0])
    monkeypatch.setattr(hw.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(hw.time, "sleep", lambda s: None)
    assert hw.cores_busy_elsewhere(1.0) == pytest.approx(0.5)


@pytest.mark.core_sampling
@pytest.mark.skipif(hw.cores() < 2, reason="needs a second core for the busy process")
def test_busy_elsewhere_reads_a_busy_process_here():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.5)  # the interpreter started
        assert hw.cores_busy_elsewhere(1.0) >= 0.6
    finally:
        proc.kill()
        proc.wait()
