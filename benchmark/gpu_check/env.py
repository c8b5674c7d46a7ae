"""Stage ``env``: the machine the check runs on (GPU, torch / CUDA / cuDNN, CPUs, memory, file system, commit)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .sizes import Sizes


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity), else ``os.cpu_count``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def filesystem(path: Path) -> str:
    """The file-system type of the mount holding ``path`` (from /proc/mounts), or ``unknown``."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path.resolve()).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def stage_env(sizes: Sizes, work: Path, **_: Any) -> dict[str, Any]:
    """The machine: GPU, torch / CUDA / cuDNN, bf16 support, CPUs, /dev/shm, memory, the code's commit."""
    import torch

    from ..records import code_version

    rows = [("torch", torch.__version__), ("CUDA (torch build)", torch.version.cuda or "none"),
            ("cuDNN", str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none")]
    cuda = torch.cuda.is_available()
    gpu = "none (torch sees no CUDA device)"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        gpu = torch.cuda.get_device_name(0)
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation argument
            native = torch.cuda.is_bf16_supported()
        rows += [("GPU", f"{gpu} ({props.total_memory / 2**30:.0f} GiB, compute capability "
                         f"{props.major}.{props.minor}, {torch.cuda.device_count()} visible)"),
                 ("bf16 native", "yes" if native else "no (fp16 + GradScaler needed)")]
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout.strip()
        rows.append(("nvidia-smi", out.splitlines()[0] if out else "no answer"))
    shm = shutil.disk_usage("/dev/shm") if Path("/dev/shm").is_dir() else None
    from ..hardware import cpu_model

    rows += [("CPU", f"{cpu_model()}: {usable_cpus()} usable cores (os.cpu_count {os.cpu_count()})"),
             ("/dev/shm", f"{shm.total / 2**30:.1f} GiB, {shm.free / 2**30:.1f} GiB free" if shm else "missing"),
             ("memory", f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"),
             ("work folder", f"{work} ({filesystem(work)})"),
             ("platebench", "commit {git_commit} ({git_tree})".format(**code_version())),
             ("python", sys.version.split()[0])]
    return {"gpu": gpu, "cuda": cuda, "table": [{"what": k, "value": v} for k, v in rows]}
