"""The SLURM settings of ``bench sweep --executor slurm``: defaults, a TOML file, command-line overrides.

A settings file (``--slurm-config slurm.toml``) holds any of :class:`SlurmConfig`'s fields at its top
level and an optional ``[sbatch]`` table of further ``#SBATCH`` flags (docs/cluster.md has an
example); command-line options override the file. Unknown keys and wrong types are errors that name
the file, the key and the valid keys.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BenchError

SUBMITIT_REQUIREMENT = "submitit>=1.5"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class SlurmConfig:
    """Resources and behaviour of the sweep's SLURM job arrays (one array task per unit)."""

    partition: str | None = None
    """SLURM partition (``#SBATCH --partition``); None: the cluster's default."""
    time_min: int = 24 * 60
    """Wall-time limit of one unit in minutes; a unit still running then is checkpointed and requeued."""
    gpus_per_node: int = 0
    """GPUs per unit (``--gpus-per-node``); 1 for ``--preset paper --device cuda``."""
    cpus_per_task: int = 2
    """CPU cores per unit."""
    mem_gb: float | None = None
    """Memory per unit in GB (``--mem``); None: the partition's default."""
    array_parallelism: int = 32
    """At most this many units of an array run at once (``--array=0-N%P``)."""
    max_retries: int = 3
    """How often a preempted or timed-out unit is requeued before it is reported as failed."""
    folder: str | None = None
    """submitit's folder (submission scripts, pickled units, logs, ``jobs.json``); None: ``<logs>/slurm``.
    Must be on a file system the compute nodes share, like the results folder and ``$PLATEBENCH_CACHE``."""
    account: str | None = None
    """``--account`` to charge."""
    qos: str | None = None
    """``--qos``."""
    constraint: str | None = None
    """``--constraint`` (node features, e.g. a GPU type)."""
    job_name: str = "platebench"
    """``--job-name``."""
    setup: tuple[str, ...] = ()
    """Shell lines run before each unit (``module load ...``, activating the environment)."""
    python: str | None = None
    """Command that starts Python on the nodes (default: this interpreter's path)."""
    poll_s: float = 30.0
    """Seconds between two looks at the jobs' states (one ``sacct`` call for all)."""
    sbatch: Mapping[str, str] = field(default_factory=dict)
    """Further ``#SBATCH`` flags, e.g. ``{"exclude": "node13"}``."""

    def executor_parameters(self) -> dict[str, Any]:
        """The parameters of :class:`submitit.SlurmExecutor` (``update_parameters``) these settings mean."""
        params: dict[str, Any] = {"time": self.time_min, "cpus_per_task": self.cpus_per_task,
                                  "array_parallelism": self.array_parallelism, "job_name": self.job_name}
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb)}GB" if self.mem_gb == int(self.mem_gb) else f"{int(self.mem_gb * 1024)}MB"
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.setup:
            params["setup"] = list(self.setup)
        if self.sbatch:
            params["additional_parameters"] = dict(self.sbatch)
        return params


_STR, _INT, _NUM = ((str,), "a string"), ((int,), "an integer"), ((int, float), "a number")
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "partition": _STR, "time_min": _INT, "gpus_per_node": _INT, "cpus_per_task": _INT, "mem_gb": _NUM,
    "array_parallelism": _INT, "max_retries": _INT, "folder": _STR, "account": _STR, "qos": _STR,
    "constraint": _STR, "job_name": _STR, "setup": ((list, tuple), "a list of strings"), "python": _STR,
    "poll_s": _NUM, "sbatch": ((dict,), "a table of flag = value"),
}
_POSITIVE = ("time_min", "cpus_per_task", "array_parallelism", "poll_s")
_NON_NEGATIVE = ("gpus_per_node", "max_retries")


def slurm_config(path: Path | None = None, **overrides: Any) -> SlurmConfig:
    """The settings: defaults, then the TOML file at ``path`` (if any), then the non-None ``overrides``."""
    values: dict[str, Any] = {}
    where = "the command line"
    if path is not None:
        where = str(path)
        try:
            values.update(tomllib.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise BenchError(f"SLURM settings file {path} does not exist; write one (docs/cluster.md has an "
                             "example) or leave out --slurm-config") from None
        except tomllib.TOMLDecodeError as exc:
            raise BenchError(f"SLURM settings file {path} is not valid TOML: {exc}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    valid = [f.name for f in dataclasses.fields(SlurmConfig)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise BenchError(f"unknown SLURM setting(s) {', '.join(unknown)} in {where}; valid: {', '.join(valid)}")
    for key, value in values.items():
        kinds, what = _TYPES[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise BenchError(f"SLURM setting {key} = {value!r} in {where} must be {what}")
        if key in _POSITIVE and value <= 0 or key in _NON_NEGATIVE and value < 0:
            raise BenchError(f"SLURM setting {key} = {value!r} in {where} must be "
                             f"{'positive' if key in _POSITIVE else 'zero or more'}")
    if "setup" in values:
        values["setup"] = tuple(str(line) for line in values["setup"])
    if "sbatch" in values:
        values["sbatch"] = {str(k): str(v) for k, v in values["sbatch"].items()}
    return SlurmConfig(**values)


__all__ = ["SlurmConfig", "slurm_config"]


def require_submitit() -> None:
    """Raise an install hint unless submitit imports (``--executor slurm`` of a sweep or a JUMP preparation)."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise BenchError(f"--executor slurm needs submitit: pip install '{SUBMITIT_REQUIREMENT}' "
                         "(or use --executor local)") from None
