"""What a method declares, as checked plain data: :class:`MethodInfo`, without importing a plugin here.

The evaluator needs a method's access level, description, ``min_controls``, resolved config and
where its class lives (to start a sealed worker for it), but must never import a plugin's code
(:mod:`benchmark.registry`). :func:`method_info` therefore describes a built-in or local class in
this process (:func:`describe_class`) and a plugin in a fresh sandboxed interpreter
(:func:`describe_named`, run through :func:`benchmark.sealed.isolated.run_isolated`), whose
JSON answer is untrusted: :meth:`MethodInfo.from_json` checks every field's type and range and
refuses anything else with one clear line. ``kind``, ``origin``, ``builtin`` and ``plugin`` come
from this process's registry (entry-point metadata), never from the worker's answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import BenchError

if TYPE_CHECKING:  # imported where used: listing and describing stay light
    from .methods.base import AccessLevel, Method, MethodConfig

DESCRIBE_TIME_LIMIT_S = 120.0
"""Time limit of the sandboxed process that imports a plugin to describe it."""
MAX_DESCRIPTION = 1000
MAX_CONTROLS = 10**6
MAX_TEXT = 300
"""Longest module, qualname or ``starts_from`` accepted from a worker."""
MAX_JSON_CHARS = 100_000
"""Largest config or ``quick_overrides`` (as JSON text) accepted from a worker."""
DESCRIBED = ("name", "module", "qualname", "access", "description", "min_controls", "deterministic",
             "quick_overrides", "config", "starts_from")
"""The keys :func:`describe_class` returns (and a worker's answer must hold, no others)."""


class MethodInfoError(BenchError):
    """A method's description (from a sandboxed worker) is malformed."""


def resolve_config(method_cls: type[Method], overrides: Mapping[str, Any] | None = None,
                   quick: bool = False, preset: str | None = None) -> MethodConfig:
    """The method's config: defaults, then the ``preset``'s values that are fields of its config
    (:mod:`benchmark.protocol.presets`), then its ``quick_overrides`` (with ``quick``), then ``overrides``."""
    from .protocol.presets import preset_values

    values = {**(preset_values(preset, method_cls.Config) if preset else {}),
              **(method_cls.quick_overrides if quick else {}), **dict(overrides or {})}
    return method_cls.Config.from_dict(values) if values else method_cls.Config()


@dataclass(frozen=True)
class MethodInfo:
    """A method's declaration and resolved config, as the evaluator uses it (every field plain, checked data).

    ``kind``: ``builtin``, ``local`` (a class registered in this process) or ``plugin``
    (:mod:`benchmark.registry`). ``module``/``qualname``: where the class lives (a plugin's own
    claim: a worker imports a plugin through its entry point, by ``name``). ``config``: the resolved
    config's ``to_dict()``, JSON-safe (what records store). ``starts_from``: ``module.qualname`` of
    the config class whose trained model the method shares (:func:`benchmark.sweep.grid.prerequisites`).
    """

    name: str
    origin: str
    module: str
    qualname: str
    access: AccessLevel
    description: str
    min_controls: int
    quick_overrides: dict[str, Any]
    config: dict[str, Any]
    builtin: bool
    plugin: bool = False
    deterministic: bool = True
    starts_from: str | None = None

    @property
    def kind(self) -> str:
        return "builtin" if self.builtin else "plugin" if self.plugin else "local"

    def to_json(self) -> dict[str, Any]:
        """The worker-described fields plus ``origin`` and ``kind`` (JSON)."""
        return {"name": self.name, "module": self.module, "qualname": self.qualname, "access": str(self.access),
                "description": self.description, "min_controls": self.min_controls,
                "deterministic": self.deterministic, "quick_overrides": self.quick_overrides,
                "config": self.config, "starts_from": self.starts_from, "origin": self.origin, "kind": self.kind}

    @classmethod
    def from_json(cls, described: Any, *, name: str, origin: str, kind: str) -> MethodInfo:
        """Check a description (:func:`describe_class`'s dict, possibly from an untrusted worker) of method ``name``.

        ``origin`` and ``kind`` are this process's (registry metadata). Raises :class:`MethodInfoError`
        naming the method and the field when a field is missing, extra, of the wrong type or out of range.
        """
        from .methods.base import AccessLevel

        def bad(what: str) -> MethodInfoError:
            return MethodInfoError(f"the description of method '{name}' ({origin}) is malformed: {what}; "
                                   "a method's class attributes must be plain values (docs/sealed.md)")

        if kind not in ("builtin", "local", "plugin"):
            raise ValueError(f"kind must be builtin, local or plugin, got {kind!r}")
        if not isinstance(described, dict):
            raise bad(f"expected a JSON object, got {type(described).__name__}")
        missing, extra = sorted(set(DESCRIBED) - set(described)), sorted(set(described) - set(DESCRIBED))
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(map(str, extra))}"[:200]] if extra else [])
            raise bad("; ".join(parts))
        d = described
        if d["name"] != name:
            raise bad(f"its class is named {_short(d['name'])}, not '{name}' (a plugin's entry point name must be "
                      "its method's name)")
        for key in ("module", "qualname"):
            if not (isinstance(d[key], str) and 0 < len(d[key]) <= MAX_TEXT):
                raise bad(f"{key} must be a non-empty string of at most {MAX_TEXT} characters, got {_short(d[key])}")
        if kind == "plugin" and (d["module"] == "benchmark" or d["module"].startswith("benchmark.")):
            raise bad(f"a plugin's class claims the module {d['module']} of platebench itself")
        if not (isinstance(d["access"], str) and d["access"] in {a.value for a in AccessLevel}):
            raise bad(f"access must be one of {', '.join(a.value for a in AccessLevel)}, got {_short(d['access'])}")
        if not (isinstance(d["description"], str) and len(d["description"]) <= MAX_DESCRIPTION):
            raise bad(f"description must be a string of at most {MAX_DESCRIPTION} characters, got "
                      f"{type(d['description']).__name__} of length {_length(d['description'])}")
        if not (type(d["min_controls"]) is int and 0 <= d["min_controls"] <= MAX_CONTROLS):
            raise bad(f"min_controls must be an integer in [0, {MAX_CONTROLS}], got {_short(d['min_controls'])}")
        if not isinstance(d["deterministic"], bool):
            raise bad(f"deterministic must be true or false, got {_short(d['deterministic'])}")
        for key in ("quick_overrides", "config"):
            problem = json_object_problem(d[key])
            if problem:
                raise bad(f"{key} {problem}")
        starts = d["starts_from"]
        if not (starts is None or (isinstance(starts, str) and 0 < len(starts) <= MAX_TEXT)):
            raise bad(f"starts_from must be null or a string of at most {MAX_TEXT} characters, got {_short(starts)}")
        return cls(name=name, origin=origin, module=d["module"], qualname=d["qualname"],
                   access=AccessLevel(d["access"]), description=d["description"], min_controls=d["min_controls"],
                   quick_overrides=dict(d["quick_overrides"]), config=dict(d["config"]), builtin=kind == "builtin",
                   plugin=kind == "plugin", deterministic=d["deterministic"], starts_from=starts)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _length(value: Any) -> str:
    return str(len(value)) if isinstance(value, (str, list, dict)) else "-"


def json_object_problem(value: Any, limit: int = MAX_JSON_CHARS) -> str | None:
    """Why ``value`` is not a JSON object of plain values (str keys; str, finite numbers, bools, null,
    lists and objects of them; at most ``limit`` characters as JSON); None if it is one."""
    if not isinstance(value, dict):
        return f"must be a JSON object, got {type(value).__name__}"
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                return "has a key that is not a string"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "holds a number that is not finite"
        elif not (item is None or isinstance(item, (str, bool, int))):
            return f"holds a {type(item).__name__}, not a JSON value"
    if len(json.dumps(value)) > limit:
        return f"is larger than {limit} characters as JSON"
    return None


def describe_class(cls: type[Method], overrides: Mapping[str, Any] | None = None, quick: bool = False,
                   preset: str | None = None) -> dict[str, Any]:
    """What ``cls`` declares and its config resolved with ``overrides``, ``quick``, ``preset``: a JSON dict."""
    return describe_config(cls, resolve_config(cls, overrides, quick, preset))


def describe_config(cls: type[Method], config: MethodConfig) -> dict[str, Any]:
    """:func:`describe_class` for an already resolved ``config``."""
    from .records import json_safe

    starts = getattr(cls, "starts_from", None)
    return {"name": cls.name, "module": cls.__module__, "qualname": cls.__qualname__, "access": str(cls.access),
            "description": cls.description, "min_controls": json_safe(cls.min_controls),
            "deterministic": cls.deterministic, "quick_overrides": json_safe(dict(cls.quick_overrides)),
            "config": json_safe(config.to_dict()),
            "starts_from": None if starts is None else f"{starts.__module__}.{starts.__qualname__}"}


def describe_named(payload: dict[str, Any]) -> dict[str, Any]:
    """**Runs inside the sandbox**: import method ``payload["method"]`` (a plugin's entry point too) and
    return :func:`describe_class` with the payload's ``overrides``, ``quick`` and ``preset``."""
    from .registry import get_method

    cls = get_method(str(payload["method"]), import_plugins=True)
    return describe_class(cls, payload.get("overrides") or {}, bool(payload.get("quick")), payload.get("preset"))


def info_of(cls: type[Method], config: MethodConfig) -> MethodInfo:
    """The :class:`MethodInfo` of a built-in or local class imported here, with ``config``."""
    from .registry import _ORIGINS, kind_of

    return MethodInfo.from_json(describe_config(cls, config), name=cls.name, origin=_ORIGINS.get(cls.name, "?"),
                                kind=kind_of(cls))


def plugin_folders(name: str) -> list[str]:
    """The folder of plugin ``name``'s top-level package (or module), found from metadata without importing it:
    what its sandboxed process must read besides Python, site-packages and platebench."""
    from .registry import method_entry
    from .sealed.sandbox import module_folder

    folder = module_folder(method_entry(name).target.split(":", 1)[0].strip())
    return [folder] if folder else []


def method_info(name: str, overrides: Mapping[str, Any] | None = None, quick: bool = False,
                preset: str | None = None, *, time_limit_s: float = DESCRIBE_TIME_LIMIT_S) -> MethodInfo:
    """What method ``name`` declares, its config resolved with ``overrides``, ``quick`` and ``preset``.

    A built-in or local class is described in this process; a plugin in a sandboxed interpreter
    (:func:`describe_named`), never imported here. Raises :class:`~benchmark.errors.UnknownNameError`
    for an unknown name (listing the valid ones), the config's :class:`BenchError` for a bad override,
    :class:`~benchmark.sealed.isolated.IsolatedFailure` when the plugin's process fails, and
    :class:`MethodInfoError` when its answer is malformed.
    """
    from .registry import get_method, method_entry

    entry = method_entry(name)
    if not entry.plugin:
        described = describe_class(get_method(name), overrides, quick, preset)
    else:
        from .records import json_safe
        from .sealed.isolated import run_isolated

        payload = {"method": name, "overrides": json_safe(dict(overrides or {})), "quick": bool(quick),
                   "preset": preset}
        described = run_isolated("benchmark.method_info:describe_named", payload, time_limit_s=time_limit_s,
                                 readable=plugin_folders(name))
    return MethodInfo.from_json(described, name=name, origin=entry.origin, kind=entry.kind)


__all__ = ["DESCRIBE_TIME_LIMIT_S", "MethodInfo", "MethodInfoError", "describe_class", "describe_config",
           "describe_named", "info_of", "json_object_problem", "method_info", "plugin_folders", "resolve_config"]
