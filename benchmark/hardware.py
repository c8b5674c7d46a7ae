"""The machine a run ran on, as far as it changes numbers: CPU, instruction sets, threads, math libraries.

A rerun of the same commit, seeds and data is bit for bit identical when these agree
(same CPU kernels, same reduction order); on other hardware or thread settings torch
picks other kernels (AVX2 vs AVX-512 vs AMX, another BLAS, another split of the work
over threads) and the numbers agree only statistically. :func:`hardware_info` is cheap
(a few milliseconds): it reads the first block of ``/proc/cpuinfo`` and the build
description torch already holds.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from typing import Any

KERNEL_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni",                               # x86: AVX2 kernels
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",  # AVX-512 kernels
    "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",                                  # AMX (oneDNN matmuls)
    "asimd", "asimddp", "sve", "sve2", "bf16", "i8mm",                               # ARM: NEON (asimd), SVE
)
"""Instruction-set flags for which torch, oneDNN or the BLAS have their own kernels (as /proc/cpuinfo names them)."""

THREAD_ENV = ("OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "ONEDNN_", "DNNL_", "ATEN_CPU_CAPABILITY",
              "TORCH_NUM_THREADS")
"""Environment variables (names or prefixes) that change torch's threads or the kernels it picks."""

CPUINFO = "/proc/cpuinfo"


def _first_cpu(path: str = CPUINFO) -> dict[str, str]:
    """The first processor block of ``/proc/cpuinfo`` (lower-case keys), or {} where there is none."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        return {}
    return fields


def _command(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout if out.returncode == 0 else ""


def cpu_model(cpuinfo: dict[str, str] | None = None) -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo, else lscpu or sysctl), or ``"unknown"``."""
    cpuinfo = _first_cpu() if cpuinfo is None else cpuinfo
    for key in ("model name", "cpu model", "hardware"):
        if cpuinfo.get(key):
            return cpuinfo[key]
    if platform.system() == "Darwin":
        name = _command(["sysctl", "-n", "machdep.cpu.brand_string"]).strip()
    else:  # ARM kernels often leave the name out of /proc/cpuinfo; lscpu knows it from the part number
        name = next((line.split(":", 1)[1].strip() for line in _command(["lscpu"]).splitlines()
                     if line.lower().startswith("model name:")), "")
    return name or platform.processor() or "unknown"


def cpu_id(cpuinfo: dict[str, str] | None = None) -> str | None:
    """Vendor, family, model and stepping (x86) or implementer and part (ARM): the exact core where the
    model name is generic (virtual machines often say only "AMD EPYC"); None where /proc/cpuinfo has neither."""
    cpuinfo = _first_cpu() if cpuinfo is None else cpuinfo
    if "cpu family" in cpuinfo:
        return (f"{cpuinfo.get('vendor_id', '?')} family {cpuinfo['cpu family']} model {cpuinfo.get('model', '?')} "
                f"stepping {cpuinfo.get('stepping', '?')}")
    if "cpu implementer" in cpuinfo:
        return (f"implementer {cpuinfo['cpu implementer']} part {cpuinfo.get('cpu part', '?')} "
                f"variant {cpuinfo.get('cpu variant', '?')} revision {cpuinfo.get('cpu revision', '?')}")
    return None


def cpu_isa(cpuinfo: dict[str, str] | None = None) -> list[str] | None:
    """The :data:`KERNEL_FLAGS` the CPU has, in that order; None where the flags cannot be read."""
    cpuinfo = _first_cpu() if cpuinfo is None else cpuinfo
    flags = cpuinfo.get("flags", cpuinfo.get("features"))
    if flags is None:
        return None
    present = set(flags.split())
    return [flag for flag in KERNEL_FLAGS if flag in present]


def usable_cpus() -> int | None:
    """CPUs this process may run on (its affinity mask), or None where the platform does not say."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def thread_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The set environment variables of :data:`THREAD_ENV`, sorted by name."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in sorted(environ) if k.startswith(THREAD_ENV)}


def parse_torch_config(text: str) -> dict[str, str | None]:
    """BLAS, LAPACK, MKL, oneDNN (MKL-DNN) and OpenMP of a ``torch.__config__.show()`` text."""
    settings = dict(re.findall(r"\b([A-Z][A-Z0-9_]*)=([^,\n]*)", text))

    def version(pattern: str) -> str | None:
        found = re.search(pattern, text)
        return found.group(1) if found else None

    return {
        "blas": settings.get("BLAS_INFO") or None,
        "lapack": settings.get("LAPACK_INFO") or None,
        "use_mkl": settings.get("USE_MKL") or None,
        "use_mkldnn": settings.get("USE_MKLDNN") or None,
        "mkl_version": version(r"Math Kernel Library Version ([\d.]+)"),
        "onednn_version": version(r"(?:MKL-DNN|oneDNN) v?([\d.]+)"),
        "openmp": version(r"OpenMP (\d+)"),
        "build_cpu_capability": version(r"CPU capability usage: (\S+)"),
    }


def torch_info() -> dict[str, Any]:
    """torch's thread settings and its BLAS / oneDNN build (imports torch)."""
    import torch

    build: dict[str, Any] = parse_torch_config(torch.__config__.show())
    build["mkl_available"] = torch.backends.mkl.is_available()
    build["mkldnn_available"] = torch.backends.mkldnn.is_available()
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    build["cpu_capability"] = capability() if capability else None
    parallel = re.search(r"ATen parallel backend: (\S+)", torch.__config__.parallel_info())
    threads = {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
               "parallel_backend": parallel.group(1) if parallel else None, "env": thread_env()}
    return {"torch_threads": threads, "torch_build": build}


def hardware_info() -> dict[str, Any]:
    """``cpu`` (model, exact core id, kernel-relevant instruction sets, logical and usable CPUs),
    ``torch_threads`` and ``torch_build``, JSON-ready."""
    cpuinfo = _first_cpu()
    cpu = {"model": cpu_model(cpuinfo), "id": cpu_id(cpuinfo), "machine": platform.machine(), "isa": cpu_isa(cpuinfo),
           "logical_cpus": os.cpu_count(), "usable_cpus": usable_cpus()}
    return {"cpu": cpu, **torch_info()}
