"""CPU feature detection picks presets from what this machine reports, never a hard-coded ISA."""

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
