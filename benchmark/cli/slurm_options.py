"""The SLURM options shared by ``bench sweep`` and ``bench data prepare jump``: declared once, checked once.

:func:`slurm_option_types` gives the typer option types of a command whose units are called ``noun``
(``unit``, ``plate``); :func:`slurm_settings` turns the values into a
:class:`~benchmark.slurm.config.SlurmConfig` and refuses them without ``--executor slurm``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import BenchError

if TYPE_CHECKING:
    from ..slurm.config import SlurmConfig

SLURM_PANEL = "SLURM (--executor slurm)"


def slurm_option_types(noun: str, *, folder_default: str, mem_help: str | None = None) -> SimpleNamespace:
    """Annotated typer option types (``config``, ``partition``, ``time``, ``gpus``, ``cpus``, ``mem_gb``,
    ``array_parallelism``, ``max_retries``, ``folder``, ``wait``) whose help speaks of ``noun``s."""

    def option(*names: str, help: str) -> Any:
        return typer.Option(*names, help=help, rich_help_panel=SLURM_PANEL)

    return SimpleNamespace(
        config=Annotated[Path | None, option("--slurm-config", help="TOML file of SLURM settings (docs/cluster.md); "
                                             "the options below override it.")],
        partition=Annotated[str | None, option("--partition", help="SLURM partition.")],
        time=Annotated[int | None, option("--slurm-time", help=f"Minutes per {noun} (default 1440).")],
        gpus=Annotated[int | None, option("--gpus", help=f"GPUs per {noun} (default 0).")],
        cpus=Annotated[int | None, option("--cpus", help=f"CPU cores per {noun} (default 2).")],
        mem_gb=Annotated[float | None, option("--mem-gb", help=mem_help or f"Memory per {noun} in GB.")],
        array_parallelism=Annotated[int | None, option("--array-parallelism",
                                                       help=f"{noun.capitalize()}s of an array running at once "
                                                            "(default 32).")],
        max_retries=Annotated[int | None, option("--max-retries", help=f"Requeues of a preempted or timed-out {noun} "
                                                 "before it is reported failed (default 3).")],
        folder=Annotated[Path | None, option("--slurm-folder", help="submitit's folder (scripts, logs, jobs.json; "
                                             f"default {folder_default}).")],
        wait=Annotated[bool, option("--wait/--no-wait", help=f"Follow the SLURM jobs until every {noun} ended, or "
                                    "submit and return.")],
    )


def slurm_settings(executor: str | None, config_file: Path | None, wait: bool, **options: Any) -> SlurmConfig | None:
    """The SLURM settings of ``--executor slurm`` (file, then options); None for another executor.

    ``options`` are :class:`SlurmConfig` fields (``partition``, ``time_min``, ...; None: not given).
    Given without ``--executor slurm`` (or ``--no-wait``), they are an error that names them.
    """
    if options.get("folder") is not None:
        options["folder"] = str(options["folder"])
    if executor != "slurm":
        given = [k for k, v in options.items() if v is not None] + (["slurm_config"] if config_file else [])
        if given or not wait:
            raise BenchError(f"the SLURM options ({', '.join(given) or 'no_wait'}) apply to --executor slurm only; "
                             "drop them or add --executor slurm")
        return None
    from ..slurm.config import slurm_config

    return slurm_config(config_file, **options)
