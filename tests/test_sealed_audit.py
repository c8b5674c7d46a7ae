"""The audit hook's decisions, called directly (installing it would seal the test process for good)."""

from __future__ import annotations

import os
import struct

import pytest

from benchmark.sealed.audit import VIOLATION_EXIT, Hook, Policy
from benchmark.sealed.policy import INDEX_WHAT, protected_files, run_policy


class Stopped(Exception):
    """Raised instead of os._exit by the hooks under test."""


@pytest.fixture
def setup(toy_dataset, tmp_path):
    """A cache with a sealed folder and another fold's store, a hook for it, and its report pipe."""
    cache = tmp_path / "cache"
    mine = cache / "sealed" / "toy" / "fold0"
    other = cache / "sealed" / "toy" / "fold1"
    for folder in (mine, other):
        folder.mkdir(parents=True)
        (folder / "index.parquet").write_bytes(b"x")
    code, scratch = tmp_path / "code", tmp_path / "scratch"
    code.mkdir()
    scratch.mkdir()
    policy = run_policy(protected_files(toy_dataset, cache), mine, None, [str(code), "/proc", "/etc"],
                        pids=(os.getppid(),))
    policy = Policy(**{**policy.__dict__, "writable": (str(scratch),)})
    r, w = os.pipe()

    def stop(code):
        raise Stopped(code)

    hook = Hook(policy, w, exit=stop)
    yield hook, r, toy_dataset.root, cache, mine, other
    os.close(r)
    os.close(w)


def refused(hook: Hook, r: int, event: str, *args) -> str:
    """The line the hook reports for ``event`` (it must stop the process)."""
    with pytest.raises(Stopped) as stopped:
        hook(event, args)
    assert stopped.value.args == (VIOLATION_EXIT,)
    (n,) = struct.unpack("!i", os.read(r, 4))
    return os.read(r, n).decode()


def test_the_full_index_and_shards_are_refused_by_path(setup):
    hook, r, root, *_ = setup
    index = os.path.realpath(root / "index.parquet")
    assert refused(hook, r, "open", str(root / "index.parquet"), "r", 0) == \
        f"the method tried to open {index} ({INDEX_WHAT})"
    shard = next((root / "shards").iterdir())
    assert "a pixel shard of the full dataset" in refused(hook, r, "open", shard, "rb", 0)
    assert "the full dataset's manifest" in refused(hook, r, "open", os.fsencode(root / "dataset.json"), "r", 0)
    assert "list the folder" in refused(hook, r, "os.listdir", str(root))
    assert "list the folder" in refused(hook, r, "os.scandir", root / "shards")


def test_the_cache_is_refused_except_the_runs_own_sealed_folder(setup):
    hook, r, _, cache, mine, other = setup
    hook("open", (str(mine / "index.parquet"), "r", 0))  # allowed
    hook("os.listdir", (str(mine),))
    assert "another fold's sealed store" in refused(hook, r, "open", str(other / "index.parquet"), "r", 0)
    assert "inside the platebench cache" in refused(hook, r, "os.listdir", str(cache))
    assert "inside the platebench cache" in refused(hook, r, "os.mkdir", str(cache / "new"), 0o777, None)


def test_links_relative_paths_and_descriptors_are_resolved(setup, tmp_path):
    hook, r, root, *_ = setup
    hard, soft = tmp_path / "hard.parquet", tmp_path / "soft.parquet"
    os.link(root / "index.parquet", hard)
    soft.symlink_to(root / "index.parquet")
    assert "read outside what the worker is given" in refused(hook, r, "open", str(hard), "r", 0)
    assert INDEX_WHAT in refused(hook, r, "open", str(soft), "r", 0)
    fd = os.open(root / "index.parquet", os.O_RDONLY)  # opened before the hook: its descriptor is resolved
    try:
        assert INDEX_WHAT in refused(hook, r, "mmap.__new__", fd, 0, 1, 0)
        assert INDEX_WHAT in refused(hook, r, "open", fd, "rb", 0)
    finally:
        os.close(fd)
    relative = os.path.relpath(root / "index.parquet", os.path.dirname(os.path.realpath(root)))
    parent = os.path.dirname(os.path.realpath(root))
    assert os.path.isabs(parent) and not os.path.isabs(relative)
    assert INDEX_WHAT in refused(hook, r, "open", relative, None, 0)  # as if opened with dir_fd=<parent>
    assert "hard-link" in refused(hook, r, "os.link", str(root / "index.parquet"), str(tmp_path / "x"), None, None)


def test_other_processes_proc_entries_are_refused_and_its_own_allowed(setup):
    hook, r, *_ = setup
    hook("open", (f"/proc/{os.getpid()}/status", "r", 0))
    hook("open", ("/proc/self/maps", "r", 0))
    assert "the /proc entry of another process" in refused(hook, r, "open", f"/proc/{os.getppid()}/mem", "rb", 0)


def test_processes_escaping_the_hook_are_refused_and_fork_allowed(setup):
    hook, r, *_ = setup
    hook("os.fork", ())
    assert "start a process (subprocess.Popen: cat /x)" in refused(hook, r, "subprocess.Popen", None, ["cat", "/x"],
                                                                    None, None)
    assert "os.system: ls" in refused(hook, r, "os.system", b"ls")
    assert "os.exec: /bin/cat /x" in refused(hook, r, "os.exec", "/bin/cat", ["/bin/cat", "/x"], None)
    assert "os.posix_spawn" in refused(hook, r, "os.posix_spawn", "/bin/true", ["true"], None)
    hook("socket.connect", (object(), ("127.0.0.1", 80)))
    assert "send signal SIGTERM" in refused(hook, r, "os.kill", os.getppid(), 15)
    hook("os.kill", (12345678, 15))  # a child of the worker's own (e.g. a DataLoader worker)


def test_native_code_and_gc_walks_are_refused_only_once_sealed(setup):
    hook, r, *_ = setup
    hook("ctypes.dlopen", ("libc.so.6",))
    hook("gc.get_objects", (None,))
    hook.seal()
    assert "ctypes.dlopen libc.so.6" in refused(hook, r, "ctypes.dlopen", "libc.so.6")
    assert "gc.get_objects" in refused(hook, r, "gc.get_objects", None)
    hook("open", ("/etc/hostname", "r", 0))  # everything else is left alone
    hook("builtins.id", (1,))


def test_policy_bases_are_the_unprotected_ancestors_of_the_protected_folders():
    policy = Policy(protected=(("/a/b/c", "x"), ("/a/d", "y"), ("/a/d/e/f", "z")))
    assert set(policy.bases()) == {"/a/b", "/a", "/"}


def test_descriptors_that_are_not_files_are_left_alone(setup):
    hook, *_ = setup
    r, w = os.pipe()
    try:
        hook("open", (r, "rb", 0))  # e.g. subprocess wrapping its pipes
    finally:
        os.close(r)
        os.close(w)


def test_the_allowlist_refuses_reading_and_writing_outside_it(setup, tmp_path):
    hook, r, *_ = setup
    (tmp_path / "elsewhere.txt").write_text("x")
    assert "read outside what the worker is given" in refused(hook, r, "open", str(tmp_path / "elsewhere.txt"), "r", 0)
    assert "write outside the run's scratch folder" in refused(hook, r, "open", str(tmp_path / "code" / "new.py"),
                                                                "w", 0)
    assert "write outside" in refused(hook, r, "open", "/etc/planted", None, os.O_WRONLY | os.O_CREAT)
    assert "write outside" in refused(hook, r, "os.remove", str(tmp_path / "code"))
    hook("open", (str(tmp_path / "code"), "r", 0))  # readable
    hook("open", (str(tmp_path / "scratch" / "f"), "w", 0))  # writable
    hook("open", (str(tmp_path / "nothing-here"), "r", 0))  # absent: nothing to read (the kernel's rules still hold)
