"""Cheating methods in sealed runs: each scores at chance or gets a failed record naming what it tried.

Every cheater of ``tests/_cheaters.py`` scores 1.0 in process (the paths exist there) and
is stopped in a sealed run. ``_probe`` runs one snippet of code (``$PLATEBENCH_PROBE``)
in fit, to show one by one what the audit hook refuses, and what it allows.
"""

from __future__ import annotations

import os

import pytest

from _cheaters import CHEATERS, LINKS_ENV, ROOT_ENV
from _toy_methods import Centroid
from benchmark.protocol.evaluation import fit_and_evaluate
from benchmark.protocol.loop import run_protocol
from benchmark.records import load_records
from benchmark.registry import registered
from benchmark.sealed import landlock
from benchmark.sealed.runs import warm_up
from benchmark.splits import make_folds

PROBE_ENV = "PLATEBENCH_PROBE"


class Probe(Centroid):
    """Runs ``$PLATEBENCH_PROBE`` in fit (``train`` and ``os`` in scope), then fits honestly."""

    name = "_probe"
    description = "test: runs a snippet in fit"

    def fit(self, train, val, seed):
        exec(os.environ[PROBE_ENV], {"train": train, "os": os})  # noqa: S102 - test-only
        return super().fit(train, val, seed)


@pytest.fixture(scope="module")
def probe_method():
    with registered(Probe):
        yield Probe


pytestmark = pytest.mark.usefixtures("cheaters", "probe_method")


def run(dataset, tmp_path, method):
    (outcome,) = run_protocol(method, "source_out", dataset, seeds=[0], folds=[0], device="cpu",
                              results_dir=tmp_path / "res")
    return outcome


@pytest.fixture
def cheat_env(toy_dataset, tmp_path, monkeypatch):
    """Where the cheaters look: the toy dataset's folder, and a mirror of it made of hard links."""
    links = tmp_path / "links"
    (links / "shards").mkdir(parents=True)
    for path in toy_dataset.root.rglob("*"):
        if path.is_file():
            os.link(path, links / path.relative_to(toy_dataset.root))
    monkeypatch.setenv(ROOT_ENV, str(toy_dataset.root))
    monkeypatch.setenv(LINKS_ENV, str(links))
    return os.path.realpath(toy_dataset.root), links


NOT_THERE = "No such file or directory"
"""What a native read of a path says under bubblewrap, where the dataset is not in the worker's file system."""
SEALED = {  # cheater -> what its sealed run must say (None: it runs, and scores at chance; a tuple: one of them)
    "_cheat_private_dataset": None,
    "_cheat_offsets": "adapt on plate src0_b0_p0 raised AttributeError: ArrayImages has no attribute '_offsets'",
    "_cheat_gc": "the method tried to walk every object of the process (gc.get_objects)",
    "_cheat_open": "the method tried to open {root}/index.parquet (the full dataset index, which holds target labels)",
    # polars reads the index natively: the kernel refuses it under Landlock, else the audit hook stops np.load
    "_cheat_np_load": ("Permission denied (os error 13): {root}/index.parquet", NOT_THERE)
                      if landlock.abi_version() else "the method tried to open {root}/shards/",
    "_cheat_pathlib": "the method tried to open {root}/index.parquet (the full dataset index",
    "_cheat_os_open": "the method tried to open {root}/index.parquet (the full dataset index",
    "_cheat_hard_link": "the method tried to hard-link {root}/index.parquet (the full dataset index",
    # links made beforehand outside the dataset: outside the allowlist (or absent from the sandbox's file system)
    "_cheat_linked": ("the method tried to open {links}/index.parquet (read outside what the worker is given", NOT_THERE),
    "_cheat_subprocess": "the method tried to start a process (subprocess.Popen: cat {root}/index.parquet)",
}


@pytest.mark.parametrize("cheater", CHEATERS, ids=[c.name for c in CHEATERS])
def test_a_cheater_wins_in_process_and_is_stopped_when_sealed(toy_dataset, tmp_path, cheat_env, cheater):
    root, links = cheat_env
    fold = make_folds(toy_dataset.index, "source_out")[0]
    assert fit_and_evaluate(cheater(), toy_dataset, fold, 0).metrics["out_of_domain"]["accuracy"] == 1.0
    outcome = run(toy_dataset, tmp_path, cheater.name)
    expected = SEALED[cheater.name]
    if expected is None:
        assert outcome.status == "ok" and outcome.out_of_domain_accuracy <= 0.2  # chance: 1/8
        assert outcome.in_domain_accuracy <= 0.2
    else:
        assert outcome.status == "failed"
        fragments = [e.format(root=root, links=links) for e in (expected if isinstance(expected, tuple) else
                                                                (expected,))]
        assert any(f in outcome.error for f in fragments), outcome.error
        (record,) = load_records(tmp_path / "res").failed
        assert any(f in record.data["error"] for f in fragments)


def test_a_symbolic_link_is_followed_to_what_it_points_at(toy_dataset, tmp_path, monkeypatch):
    links = tmp_path / "symlinks"
    links.mkdir()
    for name in ("index.parquet", "dataset.json", "shards"):
        (links / name).symlink_to(toy_dataset.root / name)
    monkeypatch.setenv(LINKS_ENV, str(links))
    outcome = run(toy_dataset, tmp_path, "_cheat_linked")
    assert outcome.status == "failed"
    assert f"open {links}/index.parquet ({os.path.realpath(toy_dataset.root)}/index.parquet: the full dataset " \
           "index" in outcome.error or NOT_THERE in outcome.error, outcome.error  # bubblewrap: the links lead nowhere


def probe(toy_dataset, tmp_path, monkeypatch, code: str):
    monkeypatch.setenv(PROBE_ENV, code)
    return run(toy_dataset, tmp_path, "_probe")


@pytest.mark.parametrize("code, message", [
    ("try:\n    open(os.environ['ROOT'] + '/index.parquet')\nexcept Exception:\n    pass",
     "tried to open {root}/index.parquet"),  # catching the error does not help
    ("os.listdir(os.environ['REAL_CACHE'])", "tried to list the folder"),  # $PLATEBENCH_CACHE is its scratch
    ("os.system('true')", "tried to start a process (os.system: true)"),
    ("os.execv('/bin/true', ['true'])", "tried to start a process (os.exec: true)"),
    ("pid = os.fork()\nif pid == 0:\n    os.execv('/bin/cat', ['cat', '/etc/hostname'])\nos.waitpid(pid, 0)",
     "tried to start a process (os.exec: cat /etc/hostname)"),  # in a forked child: still this run's failure
    ("import multiprocessing as mp\np = mp.get_context('spawn').Process(target=print)\np.start()\np.join()",
     "tried to start a process (_posixsubprocess.fork_exec:"),
    ("open(f\"/proc/{os.environ['EVALUATOR']}/environ\").read()", "the /proc entry of another process"),
    ("os.kill(int(os.environ['EVALUATOR']), 0)", "tried to send signal 0 to process"),
    ("open('/tmp/planted-by-a-method', 'w').write('x')", "tried to open /tmp/planted-by-a-method (write outside the "
                                                           "run's scratch folder"),
    ("import ctypes\nctypes.CDLL('libc.so.6')", "tried to load native code after set-up (ctypes.dlopen libc.so.6)"),
])
def test_the_audit_hook_refuses(toy_dataset, tmp_path, monkeypatch, code, message):
    warm_up()
    monkeypatch.setenv("ROOT", str(toy_dataset.root))
    monkeypatch.setenv("EVALUATOR", str(os.getpid()))
    from benchmark.paths import cache_dir

    monkeypatch.setenv("REAL_CACHE", str(cache_dir()))
    outcome = probe(toy_dataset, tmp_path, monkeypatch, code)
    assert outcome.status == "failed"
    assert message.format(root=os.path.realpath(toy_dataset.root)) in outcome.error, outcome.error
    assert "a method may use only what fit, adapt and predict hand it (see docs/sealed.md)" in outcome.error


@pytest.mark.parametrize("code", [
    "open(train._dataset.root / 'index.parquet', 'rb').read()",  # its own sealed store
    "pid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)",  # fork keeps the hook: allowed
    "import tempfile, pathlib\np = pathlib.Path(tempfile.mkdtemp()) / 'x'\np.write_text('1')\np.read_text()",
    "open('/proc/self/status').read()",
])
def test_the_audit_hook_allows(toy_dataset, tmp_path, monkeypatch, code):
    outcome = probe(toy_dataset, tmp_path, monkeypatch, code)
    assert outcome.status == "ok", outcome.error
