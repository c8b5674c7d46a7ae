"""Which sandbox a sealed worker runs in on this machine, and what it may reach.

Three levels, strongest first (``PLATEBENCH_SANDBOX`` forces one: ``bubblewrap``, ``landlock`` or ``audit``):

- ``bubblewrap`` — the zygote every worker is forked from runs under `bwrap <https://github.com/containers/
  bubblewrap>`_ in namespaces of its own (user, PID, mount, IPC, network, UTS): a file system holding only
  the system's libraries (``/usr``, ``/etc``), Python and its site-packages, platebench's code and the
  sealed fold stores, all read-only, with a private ``/tmp`` as the only writable place. The evaluator, the
  dataset, the results and the rest of the cache do not exist in there. Each worker then adds a Landlock
  allowlist of its own (its fold only, its own scratch folder; signals scoped).
- ``landlock`` — no namespaces (no ``bwrap``, or unprivileged user namespaces are off): the zygote runs as a
  plain process and each worker restricts itself with a Landlock read and write allowlist, signal and
  abstract-socket scoping, and the audit hook enforcing the same allowlist.
- ``audit`` — neither (another OS, an old kernel): the audit hook alone; the residual risk is in docs/sealed.md.

:func:`readable_code` lists what a worker must read to run at all (Python, site-packages, platebench, the
method's own package); :func:`bwrap_command` builds the ``bwrap`` command line around it.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Sequence

from . import landlock

SANDBOX_ENV = landlock.SANDBOX_ENV
KINDS = ("bubblewrap", "landlock", "audit")
SYSTEM_READ = ("/usr", "/etc", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/opt/conda", "/sys")
"""System folders every worker may read (libraries, certificates, CPU topology); absent ones are skipped."""
DEVICE_GLOBS = ("/dev/nvidia*", "/dev/dri")
"""GPU device nodes a worker may use (bound into the sandbox when present)."""


def forced() -> str | None:
    """The sandbox asked for with ``PLATEBENCH_SANDBOX`` (None: the strongest available)."""
    value = os.environ.get(SANDBOX_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in KINDS:
        from ..errors import BenchError

        raise BenchError(f"{SANDBOX_ENV}={value!r} is not a sandbox; use one of {', '.join(KINDS)} (or unset it)")
    return value


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """Why ``bwrap`` cannot run here (None: it can): not installed, or namespaces refused."""
    exe = shutil.which("bwrap")
    if exe is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        done = subprocess.run([exe, *_namespace_flags(), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
                               "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap failed to start ({exc})"
    if done.returncode != 0:
        text = done.stderr.decode(errors="replace").strip().splitlines()
        return f"bwrap cannot create namespaces here ({text[-1] if text else f'exit {done.returncode}'})"
    return None


def choose() -> tuple[str, str]:
    """(kind, why) of the sandbox workers will run in: ``bubblewrap`` where it works, else ``landlock`` where
    the kernel has it, else ``audit``; ``why`` says what ruled out a stronger one (empty when nothing did)."""
    wanted = forced()
    if wanted == "audit":
        return "audit", f"{SANDBOX_ENV}=audit"
    reasons = []
    if wanted in (None, "bubblewrap"):
        problem = bwrap_problem() if sys.platform.startswith("linux") else "not Linux"
        if problem is None:
            return "bubblewrap", ""
        if wanted == "bubblewrap":
            from ..errors import BenchError

            raise BenchError(f"{SANDBOX_ENV}=bubblewrap, but {problem}")
        reasons.append(problem)
    if landlock.abi_version() > 0:
        return "landlock", "; ".join(reasons)
    reasons.append("this kernel has no Landlock")
    return "audit", "; ".join(reasons)


def _namespace_flags(network: bool = False) -> list[str]:
    return ["--unshare-user", "--unshare-pid", "--unshare-ipc", *([] if network else ["--unshare-net"]),
            "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]


def needs_network() -> bool:
    """Whether workers must reach the network: one of several torchrun ranks, whose workers train together over
    TCP (``WORLD_SIZE`` > 1). Everything else runs without network."""
    return os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1")


def module_folder(module: str) -> str | None:
    """The folder holding the top-level package (or module file) of ``module``, found without importing it."""
    top = module.split(".", 1)[0]
    if top in sys.modules and getattr(sys.modules[top], "__file__", None) is None and \
            hasattr(sys.modules[top], "__path__"):
        paths = list(sys.modules[top].__path__)
        return os.path.realpath(paths[0]) if paths else None
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        return os.path.realpath(locations[0]) if locations else None
    if spec.origin and os.path.isfile(spec.origin):
        return os.path.realpath(os.path.dirname(spec.origin))
    return None


def readable_code(modules: Iterable[str] = ()) -> list[str]:
    """What every worker reads to run: the system's libraries (:data:`SYSTEM_READ`), the Python installation,
    site-packages, platebench's packages, and the folders of ``modules`` (a method's own package)."""
    import benchmark as package  # the installed package, wherever it lives

    paths = {sys.base_prefix, sys.prefix, sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
             sysconfig.get_paths()["platlib"], os.path.dirname(os.path.realpath(sys.executable))}
    import site

    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    # site-packages folders that .pth files or PYTHONPATH put on the path (a venv layered on another); never the
    # current folder or a project folder, which may hold results
    paths.update(p for p in sys.path if p and os.path.basename(os.path.normpath(p)) in ("site-packages",
                                                                                         "dist-packages"))
    paths.update(os.path.realpath(p) for p in package.__path__)
    for name in ("benchmark.methods", "benchmark.datasets"):
        spec = importlib.util.find_spec(name)  # imports only the parent package
        paths.update(os.path.realpath(p) for p in (spec.submodule_search_locations or []) if spec is not None)
    paths.update(p for p in SYSTEM_READ if os.path.exists(p))
    for module_name in modules:
        folder = module_folder(module_name)
        if folder:
            paths.add(folder)
    return sorted(p for p in {os.path.realpath(p) for p in paths if p} if os.path.exists(p))


SCRATCH_VARIABLES = (("HOME", ""), ("TMPDIR", "tmp"), ("XDG_CACHE_HOME", "cache"), ("MPLCONFIGDIR", "mpl"),
                     ("PLATEBENCH_CACHE", "platebench-cache"), ("TORCH_HOME", "torch"))
"""Variables a sandboxed process points into its scratch folder (its home, temporary files, every cache)."""


def live_in(scratch: str) -> None:
    """Make ``scratch`` this process's home, working folder, temporary folder and cache (:data:`SCRATCH_VARIABLES`)."""
    import tempfile

    for name, sub in SCRATCH_VARIABLES:
        folder = os.path.join(scratch, sub)
        os.makedirs(folder, exist_ok=True)
        os.environ[name] = folder
    os.chdir(scratch)
    tempfile.tempdir = os.environ["TMPDIR"]


def device_paths() -> list[str]:
    """GPU device nodes present on this machine (:data:`DEVICE_GLOBS`)."""
    return sorted({p for pattern in DEVICE_GLOBS for p in glob.glob(pattern)})


def bwrap_command(readable: Sequence[str], writable: Sequence[str] = (), env_tmp: str = "/tmp",
                  network: bool = False) -> list[str]:
    """The ``bwrap`` command line (without the program) of a sandbox that reads ``readable`` read-only and may
    also write ``writable`` (bound read-write); ``network``: keep the host's network (torchrun ranks).

    System folders that are symbolic links (``/lib`` -> ``usr/lib``) are recreated as links.
    """
    args = [shutil.which("bwrap") or "bwrap", *_namespace_flags(network), "--uid", str(os.getuid()),
            "--gid", str(os.getgid())]  # the same ids inside, so a worker can map them into namespaces of its own
    done: set[str] = set()
    for path in SYSTEM_READ:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
            done.add(path)
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
            done.add(path)
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    for path in _outermost(p for p in readable if p not in done):
        if any(path == d or path.startswith(d.rstrip("/") + "/") for d in done):
            continue
        args += ["--ro-bind", path, path]
    for path in writable:
        args += ["--bind", path, path]
    for device in device_paths():
        args += ["--dev-bind-try", device, device]
    args += ["--chdir", env_tmp]
    return args


def _outermost(paths: Iterable[str]) -> list[str]:
    """``paths`` without those inside another of them (a bind of the parent already holds them)."""
    ordered = sorted(set(paths), key=lambda p: (p.count("/"), p))
    out: list[str] = []
    for path in ordered:
        if not any(path == o or path.startswith(o.rstrip("/") + "/") for o in out):
            out.append(path)
    return out


__all__ = ["KINDS", "SANDBOX_ENV", "bwrap_command", "bwrap_problem", "choose", "device_paths", "forced",
           "live_in", "module_folder", "needs_network", "readable_code"]
