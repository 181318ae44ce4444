"""The machine a benchmark ran on: CPU model and the SIMD flags that decide oneDNN's kernels.

Shared by the ``bench/`` scripts so that every figure they print or write is
tagged with the CPU it was measured on (a ratio measured on an AVX2 CPU says
nothing about an AVX-512 one) and with the load average next to it (the
project's machines are shared).
"""

from __future__ import annotations

import datetime
import os
import platform
from typing import Dict, List

#: Flags (as /proc/cpuinfo spells them) that change which convolution kernels oneDNN picks.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo() -> Dict[str, str]:
    fields: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_kind(flags: List[str]) -> str:
    """``"AVX-512"`` (with ``+bf16``/``+AMX`` when present), ``"AVX2"`` or ``"other"``: the table a figure belongs to."""
    if "avx512f" in flags:
        extras = [name for flag, name in (("avx512_bf16", "bf16"), ("amx_tile", "AMX")) if flag in flags]
        return "AVX-512" + "".join("+" + e for e in extras)
    return "AVX2" if "avx2" in flags else "other"


def machine_info(threads: int) -> Dict[str, object]:
    """CPU model, its SIMD flags, the kind of CPU, core count, threads used, versions, date and load average."""
    import torch

    info = _cpuinfo()
    flags = [f for f in SIMD_FLAGS if f in info.get("flags", "").split()]
    return {
        "cpu_model": info.get("model name", platform.processor() or platform.machine()),
        "cpu_vendor": info.get("vendor_id", ""),
        "simd_flags": flags,
        "cpu_kind": cpu_kind(flags),
        "cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }


def describe(info: Dict[str, object]) -> str:
    """One line for the top of a benchmark's output."""
    return (f"machine: {info['cpu_model']} ({info['cpu_kind']}; flags {' '.join(info['simd_flags'])}), "
            f"{info['cpus']} CPUs, {info['threads']} threads, torch {info['torch']}, {info['date']}, "
            f"load average {' '.join(str(x) for x in info['load_average_1_5_15'])}, OMP_WAIT_POLICY {info['OMP_WAIT_POLICY']}")
