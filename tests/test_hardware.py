"""What a run record says about the hardware: CPU model and id, kernel-relevant flags, threads, torch's build."""

from __future__ import annotations

import json
import time

import torch

from benchmark.hardware import (KERNEL_FLAGS, cpu_id, cpu_isa, cpu_model, hardware_info, parse_torch_config,
                                thread_env)
from benchmark.records import environment_info, json_safe

X86 = {"vendor_id": "GenuineIntel", "cpu family": "6", "model": "143", "stepping": "8",
       "model name": "Intel(R) Xeon(R) Platinum 8480+",
       "flags": "fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 ht"}
ARM = {"processor": "0", "features": "fp asimd evtstrm aes asimddp sve sve2 i8mm bf16", "cpu implementer": "0x41",
       "cpu part": "0xd4f", "cpu variant": "0x0", "cpu revision": "1"}
TORCH_CONFIG = """PyTorch built with:
  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64 architecture
  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)
  - OpenMP 201511 (a.k.a. OpenMP 4.5)
  - CPU capability usage: AVX2
  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, CUDA_FLAGS= -DONNX_NAMESPACE=onnx_torch, LAPACK_INFO=mkl, \
USE_MKL=ON, USE_MKLDNN=ON, USE_OPENMP=ON,
"""


def test_x86_and_arm_cpus_are_named_and_their_kernel_flags_kept():
    assert cpu_model(X86) == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_id(X86) == "GenuineIntel family 6 model 143 stepping 8"
    assert cpu_isa(X86) == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                            "amx_tile", "amx_bf16", "amx_int8"]  # KERNEL_FLAGS order; fpu, ht dropped
    assert cpu_id(ARM) == "implementer 0x41 part 0xd4f variant 0x0 revision 1"
    assert cpu_isa(ARM) == ["asimd", "asimddp", "sve", "sve2", "bf16", "i8mm"]
    assert cpu_isa({}) is None and cpu_id({}) is None  # not readable: unknown, not "no flags"
    assert set(cpu_isa(X86)) <= set(KERNEL_FLAGS)


def test_torch_build_is_parsed_from_its_config_text():
    assert parse_torch_config(TORCH_CONFIG) == {
        "blas": "mkl", "lapack": "mkl", "use_mkl": "ON", "use_mkldnn": "ON", "mkl_version": "2024.2",
        "onednn_version": "3.12.0", "openmp": "201511", "build_cpu_capability": "AVX2"}
    assert set(parse_torch_config("").values()) == {None}


def test_thread_env_keeps_the_variables_that_change_threads_or_kernels():
    environ = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2", "HOME": "/root",
               "ONEDNN_MAX_CPU_ISA": "AVX2", "PATH": "/bin"}
    assert thread_env(environ) == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_NUM_THREADS": "2", "OMP_NUM_THREADS": "1",
                                   "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_this_machine_is_described_cheaply_and_as_json(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    hardware_info()  # warm
    start = time.perf_counter()
    info = hardware_info()
    assert time.perf_counter() - start < 0.1  # measured ~0.4 ms; environment_info runs once per bench run
    assert info["cpu"]["model"] and info["cpu"]["logical_cpus"] >= 1
    assert info["torch_threads"]["intra_op"] == torch.get_num_threads()
    assert info["torch_threads"]["env"]["OMP_NUM_THREADS"] == "3"
    assert info["torch_build"]["mkldnn_available"] == torch.backends.mkldnn.is_available()
    assert info["torch_build"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert json.loads(json.dumps(info)) == json_safe(info)


def test_environment_info_keeps_every_earlier_key():
    env = environment_info()
    earlier = ["platebench", "git_commit", "git_tree", "python", "torch", "numpy", "timm", "polars", "scikit-learn",
               "platform"]
    assert list(env)[: len(earlier)] == earlier and all(isinstance(env[k], str) for k in earlier)
    assert {"cpu", "torch_threads", "torch_build"} <= set(env)
