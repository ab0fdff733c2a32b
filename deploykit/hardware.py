"""What this CPU (and GPU, if any) can do, detected at run time: picks bf16 and the INT8 quantization preset.

Never hard-coded: the machines deploykit runs on differ (AMD with AVX-512 VNNI/BF16, Intel with
AMX, ARM, or plain AVX2).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import time


def glibc_library(name: str):
    """glibc's library `name` ("c", "m") as a ctypes CDLL on Linux with glibc, else None: the layouts and settings
    deploykit reaches through it (fenv_t, mallopt) are glibc's."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    found = ctypes.util.find_library(name)
    try:
        return ctypes.CDLL(found) if found else None
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or taskset's share, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cores_busy_elsewhere(interval: float = 0.5) -> float:
    """Cores of this process's affinity mask that other processes kept busy over the next `interval` seconds.

    The busy time of those CPUs (user, nice, system, irq, softirq; psutil.cpu_times, from /proc/stat on Linux)
    less this process's own CPU time, divided by the interval: 1.0 is one core's worth of other work. 0.0 where
    psutil cannot read the counters.
    """
    import psutil

    mask = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    me = psutil.Process()

    def busy() -> float:
        per_cpu = psutil.cpu_times(percpu=True)
        chosen = [per_cpu[i] for i in mask if i < len(per_cpu)] if mask else []
        return sum(getattr(t, f, 0.0) for t in chosen or per_cpu for f in ("user", "nice", "system", "irq", "softirq"))

    def own() -> float:
        t = me.cpu_times()
        return t.user + t.system

    try:
        busy0, own0, t0 = busy(), own(), time.monotonic()
        time.sleep(interval)
        busy1, own1, elapsed = busy(), own(), time.monotonic() - t0
    except (psutil.Error, OSError):
        return 0.0
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(elapsed, 1e-3))


def shared_cores_warning(stage: str, elsewhere: float, threads: int, n_cores: int) -> str | None:
    """The line training prints when other work holds cores its threads need, else None.

    torch's intra-op threads each take a share of every operator and the operator waits for the slowest, so one
    thread that shares its core stalls all of them: on 2 cores a 2-thread training step took 3.3x as long beside a
    one-core busy loop and 3.5x beside a second training, not 2x (bench/shared_cores.py; bench/README.md,
    "Forty-third session").
    """
    free = n_cores - elsewhere
    if elsewhere < 0.5 or threads <= free + 0.25:
        return None
    return (f"{stage}: warning: other processes keep {elsewhere:.1f} of this machine's {n_cores} cores busy, and "
            f"training runs {threads} threads: every step waits for the thread that shares a core, so it runs far "
            "slower than alone; let the other work finish first")


def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_supported(device: str | None = None) -> bool:
    """True where bf16 matmuls run natively on `device`.

    Args:
        device: "cpu" (AMX or AVX512_BF16), "cuda"/"gpu" (a CUDA GPU of compute capability 8.0 or
            later; older ones only emulate bf16), or None for the device training uses: the GPU
            when there is one, else the CPU. A GPU machine's CPU is judged by its own flags.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "gpu" or device.startswith("cuda"):
        return cuda_bf16_native()
    flags = cpu_flags()
    if "amx_bf16" in flags or "avx512_bf16" in flags:
        return True
    checker = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(checker and checker())


def bf16_training_pays(device: str) -> bool:
    """True where bf16 autocast makes training faster than float32, so `bf16: auto` turns it on.

    A CUDA GPU with native bf16, or a CPU with AMX (`amx_bf16`). AVX512_BF16 alone is native bf16 but
    not a faster trainer: on a 2-core Xeon without AMX, autocast (casts around every matmul) trained at
    0.75x float32's speed with the same accuracy (bench/README.md, run 16), so those CPUs train in float32,
    like AVX2 ones, and give the same results as them.

    Args:
        device: "cpu", or "cuda"/"gpu".
    """
    if device == "gpu" or device.startswith("cuda"):
        return cuda_bf16_native()
    return "amx_bf16" in cpu_flags()


def cuda_bf16_native() -> bool:
    """A CUDA GPU that runs bf16 natively (torch.cuda.is_bf16_supported() also says True for emulation)."""
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before 2.3 has no including_emulation and counted native support only
        return bool(torch.cuda.is_bf16_supported())


def quant_preset() -> str:
    """The ORT INT8 preset for this machine: avx512_vnni, avx2 or arm64."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags()
    if "avx512_vnni" in flags or "amx_int8" in flags or "avx_vnni" in flags:
        return "avx512_vnni"
    return "avx2"


def describe() -> dict[str, object]:
    """Machine description written into reports and manifests."""
    import torch

    flags = cpu_flags()
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    isa = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni")) or f in ("avx2", "fma"))
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "isa": isa,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_native": bf16_supported("cpu"),
        "quant_preset": quant_preset(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        **(_cuda_details() if torch.cuda.is_available() else {}),
        "platform": platform.platform(),
    }


def _cuda_details() -> dict[str, object]:
    """The GPU beside the CPU: compute capability, memory, bf16, the CUDA version torch was built for."""
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"cuda_capability": f"{props.major}.{props.minor}", "cuda_memory_gb": round(props.total_memory / 2**30, 1),
            "cuda_bf16_native": cuda_bf16_native(), "cuda_version": torch.version.cuda,
            "cuda_devices": torch.cuda.device_count()}
