"""The sealed channel (benchmark.sealed.channel): round trips, descriptors, and every way a frame is refused."""

from __future__ import annotations

import ast
import inspect
import json
import os
import pathlib
import pickle
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest

from benchmark.sealed import channel
from benchmark.sealed.channel import (ALLOWED_DTYPES, MAX_HEADER_BYTES, ArraySpec, Channel, ChannelClosed,
                                      ChannelError, ChannelTimeout, plain_json)


@pytest.fixture
def pairs():
    """Makes connected pairs of channels and closes them after the test."""
    made: list[Channel] = []

    def make() -> tuple[Channel, Channel]:
        a, b = Channel.pair()
        made.extend((a, b))
        return a, b
    yield make
    for end in made:
        end.close()


@pytest.fixture
def ends(pairs):
    return pairs()


def _frame(header: object, *, raw: bytes | None = None, version: int = channel.VERSION) -> bytes:
    """A frame's prefix and header as a (possibly malicious) peer would write it."""
    body = raw if raw is not None else json.dumps(header).encode()
    return struct.pack(">4sBI", channel.MAGIC, version, len(body)) + body


def _header(**over: object) -> dict:
    return {"kind": "probs", "fields": {}, "arrays": [], "fds": 0, **over}


def _refused(ends, data: bytes, match: str, **receive) -> ChannelError:
    a, b = ends
    a.sock.sendall(data)
    with pytest.raises(ChannelError, match=match) as info:
        b.receive(deadline=time.monotonic() + 5, **receive)
    assert type(info.value) is ChannelError
    return info.value


# -- round trips ---------------------------------------------------------------------------------

def test_round_trip_of_every_dtype_shape_and_field(ends):
    a, b = ends
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(2, 0, 5)),
              rng.integers(0, 255, size=(7,), dtype=np.uint8), np.arange(-5, 5, dtype=np.int64).reshape(2, 5),
              np.array(2.5), np.zeros((0,), np.uint8), np.asfortranarray(rng.normal(size=(3, 5))),
              np.arange(6, dtype=">f8"), np.arange(20, dtype=np.int64)[::3]]
    fields = {"plate": "P1", "n": 3, "nan": float("nan"), "nested": {"a": [1, 2.0, None, True]}, "t": (1, 2)}
    a.send("plate", fields, arrays)
    a.send("stop")
    msg = b.receive(deadline=time.monotonic() + 5)
    assert msg.kind == "plate" and msg.fds == []
    assert msg.fields["plate"] == "P1" and msg.fields["t"] == [1, 2] and np.isnan(msg.fields["nan"])
    assert msg.fields["nested"] == {"a": [1, 2.0, None, True]}
    assert len(msg.arrays) == len(arrays)
    for got, sent in zip(msg.arrays, arrays):
        assert got.shape == sent.shape and got.dtype == sent.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, sent)
        assert got.flags.c_contiguous and got.flags.writeable
    assert b.receive(kinds={"stop"}) == channel.Message("stop", {}, [], [])
    assert {np.dtype(d).name for d in ALLOWED_DTYPES} == {a.dtype.name for a in arrays[:4]}


def test_sender_refuses_what_cannot_be_framed(ends):
    a, _ = ends
    with pytest.raises(ChannelError, match=r"fit_report\['model'\]: a .*Model is not a plain JSON value"):
        a.send("stopped", {"fit_report": {"model": _Model()}})
    with pytest.raises(ChannelError, match="dtype float32, float64, uint8, int64"):
        a.send("probs", {}, [np.zeros(3, bool)])
    with pytest.raises(ChannelError, match="header is .* bytes, more than"):
        a.send("probs", {"big": "x" * MAX_HEADER_BYTES})


def test_many_megabytes_through_a_pair_in_both_directions(ends):
    a, b = ends
    big = np.arange(200 << 20, dtype=np.uint8)
    start = time.perf_counter()
    echo = threading.Thread(target=lambda: b.send("back", {}, b.receive(deadline=time.monotonic() + 10).arrays))
    echo.start()
    a.send("plate", {}, [big], deadline=time.monotonic() + 10)
    back = a.receive(deadline=time.monotonic() + 10).arrays[0]
    echo.join()
    assert time.perf_counter() - start < 5  # 400 MB moved; typically well under a second
    assert back.shape == big.shape and back[-1] == big[-1] and np.array_equal(back[::4096], big[::4096])


def test_from_fd_adopts_an_inherited_socket():
    a, b = Channel.pair()
    fd = os.dup(b.fileno())
    os.set_inheritable(fd, True)
    b.close()
    worker = Channel.from_fd(fd, name="the evaluator's order")
    assert worker.fileno() == fd and not os.get_inheritable(fd)
    a.send("plate", {"plate": "P1"}, [np.ones(3)])
    assert worker.receive(kinds={"plate"}).fields == {"plate": "P1"}
    worker.close()
    a.close()
    r, w = os.pipe()
    with pytest.raises(ChannelError, match=f"descriptor {r} is not a socket"):
        Channel.from_fd(r)
    os.close(r)
    os.close(w)


# -- file descriptors ----------------------------------------------------------------------------

def test_fds_round_trip_and_extras_are_closed(ends):
    a, b = ends
    r, w = os.pipe()
    r2, w2 = os.pipe()
    a.send("store", {"x": 1}, fds=[r, w2])
    os.close(r)
    os.close(w2)
    msg = b.receive(max_fds=2)
    assert len(msg.fds) == 2
    os.write(w, b"hello")
    assert os.read(msg.fds[0], 5) == b"hello"
    assert not os.get_inheritable(msg.fds[0])
    for fd in (*msg.fds, w):
        os.close(fd)
    assert os.read(r2, 1) == b""  # every copy of the write end is closed

    r, w = os.pipe()
    a.send("store", {}, fds=[w])
    os.close(w)
    with pytest.raises(ChannelError, match="declares 1 file descriptors, at most 0 allowed"):
        b.receive()
    assert os.read(r, 1) == b""  # the one it got was closed
    os.close(r)


def test_undeclared_fds_are_closed(ends):
    a, b = ends
    r, w = os.pipe()
    data = _frame(_header())
    assert a.sock.sendmsg([data], [(channel.socket.SOL_SOCKET, channel.socket.SCM_RIGHTS,
                                     channel.array.array("i", [w, w]))]) == len(data)
    os.close(w)
    assert b.receive(max_fds=2).fds == []
    assert os.read(r, 1) == b""
    os.close(r)


# -- refusals before allocating ------------------------------------------------------------------

def test_huge_declared_array_refused_without_allocating(ends):
    a, b = ends
    a.sock.sendall(_frame(_header(arrays=[{"dtype": "float64", "shape": [10**7, 10**7]}])))
    start = time.perf_counter()
    with pytest.raises(ChannelError, match=r"shape \(10000000, 10000000\) float64, 7.451e\+05 GB, more than the "
                                           r"16 GB allowed") as info:
        b.receive(deadline=time.monotonic() + 5)
    assert time.perf_counter() - start < 0.5
    assert type(info.value) is ChannelError
    with pytest.raises(ChannelError, match="unusable after an earlier error"):
        b.receive()


def test_declared_size_over_the_limit_is_never_allocated(ends):
    a, b = ends  # 1 GB would be allocated lazily by np.empty; tracemalloc sees NumPy's allocations
    a.sock.sendall(_frame(_header(arrays=[{"dtype": "uint8", "shape": [1000]},
                                          {"dtype": "float64", "shape": [4000, 4000, 8]}])))
    tracemalloc.start()
    try:
        with pytest.raises(ChannelError, match=r"\(4000, 4000, 8\) float64, 976.6 MB \(976.6 MB with the arrays "
                                               r"before it\), more than the 1 MB allowed"):
            b.receive(max_array_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("header, match", [
    ([1, 2], r"not an object with keys"),
    (_header(extra=1), r"not an object with keys"),
    ({"kind": "x", "fields": {}, "arrays": []}, r"not an object with keys"),
    (_header(kind=3), r"kind that is not a string \(3\)"),
    (_header(fields=[1]), r"fields that are not an object \(\[1\]\)"),
    (_header(arrays={}), r"array list that is not a list"),
    (_header(arrays=[{"dtype": "float32"}]), r"declares array 0 as"),
    (_header(arrays=[{"dtype": "float16", "shape": [2]}]), r'dtype "float16", not one of'),
    (_header(arrays=[{"dtype": "object", "shape": [2]}]), r'dtype "object"'),
    (_header(arrays=[{"dtype": "<f8", "shape": [2]}]), r'dtype "<f8"'),
    (_header(arrays=[{"dtype": "float32", "shape": [2, -1]}]), r"shape \[2, -1\], not a list of"),
    (_header(arrays=[{"dtype": "float32", "shape": [2.0]}]), r"shape \[2.0\]"),
    (_header(arrays=[{"dtype": "float32", "shape": [True]}]), r"shape \[true\]"),
    (_header(arrays=[{"dtype": "float32", "shape": 5}]), r"shape 5"),
    (_header(arrays=[{"dtype": "float32", "shape": [1] * 7}]), r"at most 6 non-negative"),
    (_header(fds=-1), r"declares -1 file descriptors"),
    (_header(fds="1"), r'declares "1" file descriptors'),
])
def test_malformed_headers_are_refused(ends, header, match):
    _refused(ends, _frame(header), match)


def test_header_not_json_says_why(ends):
    _refused(ends, _frame(None, raw=b"{'kind': 'probs'}"), r"has a header that is not JSON \(Expecting")


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000, b"", b'{"kind": "x"} trailing',
                                 b'{"kind": ' + b"9" * 5000 + b"}"])
def test_header_that_does_not_parse(ends, raw):
    _refused(ends, _frame(None, raw=raw), r"has a header that is not JSON")


def test_header_too_long_refused_before_reading_it(ends):
    a, b = ends
    a.sock.sendall(struct.pack(">4sBI", channel.MAGIC, channel.VERSION, MAX_HEADER_BYTES + 1))
    with pytest.raises(ChannelError, match=f"header of {MAX_HEADER_BYTES + 1} bytes, more than the"):
        b.receive(deadline=time.monotonic() + 1)  # no header bytes follow: it must not wait for them


def test_wrong_magic_or_version(ends, pairs):
    _refused(ends, b"GET / HTTP/1.1\r\n", r"is not a channel frame \(it starts with b'GET / HTT'")
    a, b = pairs()
    _refused((a, b), _frame(_header(), version=9), r"frame format 9, this side reads format 1")


def test_kinds_filter_and_check_callback(ends, pairs):
    a, b = ends
    a.send("ready", {"n": 1})
    with pytest.raises(ChannelError, match=r'is of kind "ready", expected one of \'probs\''):
        b.receive(kinds=("probs",))
    a, b = pairs()
    b.name = "the worker's reply"
    seen = []

    def check(kind, fields, specs):
        seen.append((kind, fields, specs))
        if specs[0].shape[0] != 4:
            raise ChannelError(f"the worker's reply has {specs[0].shape[0]} rows of probabilities, the plate 4")

    a.send("probs", {"p": "P1"}, [np.zeros((4, 3))])
    assert b.receive(kinds={"probs"}, check=check).arrays[0].shape == (4, 3)
    assert seen == [("probs", {"p": "P1"}, [ArraySpec("float64", (4, 3))])]
    assert seen[0][2][0].nbytes == 96
    a.send("probs", {}, [np.zeros((5, 3))])
    with pytest.raises(ChannelError, match="5 rows of probabilities, the plate 4"):
        b.receive(check=check)


# -- deadlines and hang-ups ----------------------------------------------------------------------

def test_half_written_frame_times_out_at_the_deadline(ends):
    a, b = ends
    b.name = "the worker's reply"
    data = _frame(_header(fields={"pad": "x" * 100}))
    a.sock.sendall(data[:9 + 50])  # the prefix and half the header; the writer stays connected
    start = time.monotonic()
    with pytest.raises(ChannelTimeout, match=r"the worker's reply stopped in the middle of its header \(50 of"):
        b.receive(deadline=start + 0.3)
    assert 0.25 < time.monotonic() - start < 0.8


def test_half_written_array_times_out(ends):
    a, b = ends
    a.sock.sendall(_frame(_header(arrays=[{"dtype": "float32", "shape": [10]}])) + b"\0" * 12)
    with pytest.raises(ChannelTimeout, match=r"array 0 \(\(10,\) float32\) \(12 of 40 bytes\)"):
        b.receive(deadline=time.monotonic() + 0.2)


def test_timeout_between_frames_leaves_the_channel_usable(ends):
    a, b = ends
    start = time.monotonic()
    with pytest.raises(ChannelTimeout, match="did not arrive before the deadline"):
        b.receive(deadline=start + 0.2)
    assert time.monotonic() - start < 0.7
    with pytest.raises(ChannelTimeout):
        b.receive(deadline=start - 1)  # already past
    a.send("ready")
    assert b.receive(deadline=time.monotonic() + 1).kind == "ready"


def test_send_to_a_peer_that_does_not_read_times_out(ends):
    a, _ = ends
    with pytest.raises(ChannelTimeout, match="did not take a 'plate' message before the deadline"):
        a.send("plate", {}, [np.zeros(64 << 20, np.uint8)], deadline=time.monotonic() + 0.3)
    with pytest.raises(ChannelError, match="unusable"):
        a.send("plate")


def test_eof_between_frames_is_closed_eof_inside_is_an_error(ends, pairs):
    a, b = ends
    a.send("ready")
    a.close()
    assert b.receive().kind == "ready"
    with pytest.raises(ChannelClosed):
        b.receive(deadline=time.monotonic() + 1)
    a, b = pairs()
    a.sock.sendall(_frame(_header())[:12])
    a.close()
    with pytest.raises(ChannelError, match=r"closed the connection in the middle of the message's header") as info:
        b.receive(deadline=time.monotonic() + 1)
    assert not isinstance(info.value, ChannelClosed)


def test_send_after_the_peer_left_is_closed(ends):
    a, b = ends
    b.close()
    with pytest.raises(ChannelClosed):
        a.send("plate", {}, [np.zeros(1 << 20)])


# -- nothing is executed -------------------------------------------------------------------------

class _Planter:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_pickle_is_never_unpickled(ends, pairs, tmp_path):
    planted = tmp_path / "planted"
    payload = pickle.dumps(_Planter(str(planted)))
    pickle.loads(payload).close()  # the payload works: loading it creates the file
    assert planted.exists()
    planted.unlink()
    _refused(ends, payload, "is not a channel frame")
    a, b = pairs()
    _refused((a, b), _frame(None, raw=payload), "a header that is not JSON")
    assert not planted.exists()


def test_the_module_has_no_way_to_execute_data():
    tree = ast.parse(inspect.getsource(channel))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module.split(".")[0] for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"pickle", "marshal", "shelve", "importlib", "multiprocessing", "dill", "cloudpickle"}
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__"}


# -- plain_json ----------------------------------------------------------------------------------

class _Model:
    pass


def test_plain_json_converts():
    value = {"a": np.float32(0.5), "b": np.int64(3), "c": np.bool_(True), "d": (1, [np.arange(3)]),
             "e": pathlib.Path("/x/y"), "f": None, "g": float("nan"), "h": np.zeros((2, 2), np.float32)}
    out = plain_json(value)
    assert out["a"] == 0.5 and type(out["a"]) is float and type(out["b"]) is int and out["c"] is True
    assert out["d"] == [1, [[0, 1, 2]]] and type(out["d"][1][0][0]) is int
    assert out["e"] == "/x/y" and out["f"] is None and out["h"] == [[0.0, 0.0], [0.0, 0.0]]
    json.dumps(out)  # really plain


@pytest.mark.parametrize("value, match", [
    ({"model": _Model()}, r"^fit_report\['model'\]: a [\w.]*_Model is not a plain JSON"),
    ({"x": [1, b"raw"]}, r"^fit_report\['x'\]\[1\]: a bytes is not"),
    ({"x": {1, 2}}, r"\['x'\]: a set is not"),
    ({"x": _Model}, r"the class [\w.]*_Model is not"),
    ({"x": len}, r"a builtin_function_or_method is not"),
    ({"x": lambda: 0}, r"a function is not"),
    ({1: 2}, r"^fit_report: key 1 is not a string"),
    ({"x": np.zeros(10_000)}, r"numpy array of 10000 elements is too large"),
    ({"x": np.array([object()])}, r"a numpy.ndarray of dtype object is not"),
    ({"x": np.complex128(1j)}, r"a numpy.complex128 is not"),
])
def test_plain_json_refuses_with_the_path(value, match):
    with pytest.raises(TypeError, match=match):
        plain_json(value, "fit_report")


def test_plain_json_refuses_a_cycle():
    loop: list = []
    loop.append(loop)
    with pytest.raises(TypeError, match=r"nested more than .* levels deep"):
        plain_json(loop)
