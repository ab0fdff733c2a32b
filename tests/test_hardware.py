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
