"""``bench leaderboard``: rebuild ``leaderboard/LEADERBOARD.md`` and its figures from run records alone.

One section per dataset version (name + fingerprint; records of different
fingerprints are never averaged together), with a row per method: access level,
in-domain / leave-batch-out / leave-source-out accuracy (mean ± std over folds ×
seeds), the gap in-domain − leave-source-out, the paired difference to ERM with a
bootstrap 95% CI that resamples folds, then seeds within them (:data:`CI_NOTE`), the
number of runs and the data version; then a per-source table, a details table, the
hyper-parameters, and the commands that regenerate the numbers.
Failed, quick, older-format and damaged records are listed, never mixed in; records of a
method that is not installed or of a data version not in the repository are rejected
with the reason (:func:`screen_records`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BenchError
from .config_versions import Superseded, newest_config
from .training import training_table
from .tables import (BASELINE, CI_NOTE, commands, configs, details_table, hardware, main_table,
                                 method_order, model_line, paired_difference, per_source_table, provenance)
from ..records import DEFAULT_RESULTS, QUICK, RECORD_FORMAT, Record, RecordSet, iter_record_files, load_records

DEFAULT_OUT = Path("leaderboard") / "LEADERBOARD.md"
EMBEDDING_FIGURE = "embeddings.png"
"""The file name of a profile method's embedding figure in ``<figures>/report/<method>_<split>/`` (``bench report``)."""

REPORTED = (
    # (method, access, in-domain, new batches) as the study reports them
    ("ERM", "none", "0.939 ± 0.005", "0.862 ± 0.060"),
    ("ARM-BN", "unlabeled", "–", "0.935 ± 0.018"),
)
"""Sanchez-Fernandez et al. 2026, JUMP-CP sources 3 and 8: reported, not reproduced here."""


def screen_records(records: list[Record], installed: dict[str, str]) -> tuple[list[Record], list[tuple[Record, str]]]:
    """Split records into accepted and rejected (with the reason); pure function.

    ``installed`` maps each installed method name to its origin (``platebench`` for the
    built-ins). A record is rejected when (1) its method is not installed, or (2) its data
    version (dataset name + fingerprint) is not *in the repository*: no record of a
    built-in method in the same results folder uses it, so nothing on the leaderboard
    could be compared with it on the same data.
    """
    known = {(r.dataset, r.fingerprint) for r in records if installed.get(r.method) == "platebench"}
    accepted, rejected = [], []
    for r in records:
        if r.method not in installed:
            rejected.append((r, f"method '{r.method}' is not installed (installed: {', '.join(sorted(installed))}); "
                                "install its package (pip install -e <its folder>) or remove these records"))
        elif (r.dataset, r.fingerprint) not in known:
            rejected.append((r, f"data version {r.dataset}-{r.fingerprint} is not in the repository: no record of a "
                                "built-in method uses it; run `bench run` on the repository's dataset (bench data "
                                "synth / bench data prepare), or add the reference methods' records for this version"))
        else:
            accepted.append(r)
    return accepted, rejected


class NoRecordsError(BenchError):
    """``--results`` holds no record the leaderboard could show; nothing is written."""


def _no_records_reason(results_dir: Path, out_md: Path, found: RecordSet, rejected: list[tuple[Record, str]],
                       refused: list[tuple[Record, list[str]]] | None = None) -> str:
    """One line: why ``results_dir`` gives no leaderboard row, and what to do."""
    first = f"run `bench run --method erm --split source_out --results {results_dir.as_posix()}` first"
    unchanged = f"{out_md.as_posix()} was not written"
    if not results_dir.exists():
        return (f"no run records: the results folder {results_dir.as_posix()} does not exist; check --results "
                f"(default {DEFAULT_RESULTS.as_posix()}) or {first}; {unchanged}")
    if not results_dir.is_dir():
        return (f"no run records: --results {results_dir.as_posix()} is a file; give the folder of run records "
                f"(default {DEFAULT_RESULTS.as_posix()}); {unchanged}")
    if not list(iter_record_files(results_dir)):
        return f"no run records under {results_dir.as_posix()} (no fold*_seed*.json file); {first}; {unchanged}"
    counts = [(len(found.failed), "failed"),
              (len(found.quick), "of the --quick profile (add --include-quick to count them)"),
              (len(rejected), "rejected (method not installed, or data version not in the repository)"),
              (len(found.outdated), "of an older record format (rerun their commands with --force)"),
              (len(found.invalid), "damaged"),  # with --include-quick there are no quick ones here
              (len(refused or []), f"refused (first: {_first_refusal(refused)})")]
    parts = ", ".join(f"{n} {what}" for n, what in counts if n)
    return f"no usable run records under {results_dir.as_posix()}: {parts}; {unchanged}"


@dataclass
class LeaderboardResult:
    """What :func:`build_leaderboard` wrote and what it has to warn about."""

    markdown_path: Path
    figures: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_records: int = 0


def _reported_section() -> list[str]:
    lines = ["## JUMP-CP — reported by the reference study, not reproduced here", "",
             "Sanchez-Fernandez et al. 2026, \"Closing the Domain Gap in Biomedical Imaging by In-Context "
             "Control Samples\" (JUMP-CP sources 3 and 8, ResNet). These numbers are quoted from the paper for "
             "orientation; they were not computed by this suite and are not comparable to the synthetic rows.", "",
             "| method | access | in-domain | new batches |", "|---|---|---|---|"]
    for method, access, ind, new in REPORTED:
        lines.append(f"| {method} (reported, not reproduced here) | {access} | {ind} | {new} |")
    return lines


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _dataset_section(name: str, fp: str, records: list[Record], failed: list[Record], other_fps: list[str],
                     results_dir: Path, out_md: Path, figures_dir: Path | None, result: LeaderboardResult,
                     baseline: str) -> list[str]:
    first = records[0].data["dataset"] if records else failed[0].data["dataset"]
    seeds = sorted({r.seed for r in records})
    shapes = sorted({"×".join(map(str, r.data["dataset"].get("image_shape", []))) for r in records})
    lines = [f"## Dataset `{name}` — version {first['version']}, fingerprint `{fp}`", ""]
    if name == "synthetic":
        lines += ["`synthetic` = a simulator, not real data: the numbers below measure methods on "
                  "simulated plates with known technical effects.", ""]
    if other_fps:
        lines += [f"> Note: records of dataset `{name}` also exist for fingerprint(s) "
                  f"{', '.join(f'`{o}`' for o in other_fps)}; each data version has its own table and "
                  "is never averaged with another.", ""]
    if records:
        lines += [f"Seeds: {', '.join(map(str, seeds))}. Stored images (C×H×W): {', '.join(shapes)}. "
                  "Accuracy = mean ± std over folds × seeds (sample std); in-domain pools both splits; "
                  "gap = in-domain − leave-source-out on the same source-out runs; Δ = paired difference "
                  f"to `{baseline}` on the same (split, fold, seed), n = number of pairs. {CI_NOTE}", "",
                  model_line(records), ""]
        lines += main_table(records, baseline) + [""]
        if figures_dir is not None:
            from .figure import accuracy_figure

            fig = accuracy_figure(records, figures_dir / f"accuracy_{name}-{fp}.png", method_order(records, baseline))
            result.figures.append(fig)
            lines += [f"![accuracy by method and split]({_rel(fig, out_md.parent)})", ""]
        per_source = per_source_table(records)
        if per_source:
            lines += ["### Leave-source-out accuracy per held-out source", "",
                      "Mean ± std over the seeds of each held-out source. Each column is a single fold, so it "
                      "has no CI: its seeds share the held-out lab.", ""] + per_source + [""]
        lines += _corrections(records, out_md, figures_dir)
        lines += _scenarios(records, name, fp, out_md, figures_dir, result, baseline)
        training = training_table(records)
        if training:
            lines += ["### Training: epochs, and whether each network stopped on its plateau", "",
                      "A run *converged* when its selected epoch (lowest training-domain validation loss) came "
                      "before the cap; one that was still improving at the cap was cut off by the budget. "
                      "Methods that start from ERM's cached model report ERM's training.", ""] + training + [""]
        lines += ["### Details (out-of-domain and in-domain metrics per split)", ""] + details_table(records) + [""]
        lines += ["### Hyper-parameters (from the records' configs)", ""] + configs(records) + [""]
        lines += ["### Code that produced the records", ""] + provenance(records) + [""]
        lines += ["### Hardware and reproducibility", ""] + hardware(records) + [""]
        lines += ["### Commands that regenerate these numbers", ""]
        lines += commands(records, str(results_dir), str(out_md), baseline) + [""]
    if failed:
        lines += [f"**Not included: {len(failed)} failed run(s)** (rerun the same command to retry):", ""]
        lines += [f"- {r.label()}: {r.data.get('error')}" for r in failed] + [""]
    return lines


def _corrections(records: list[Record], out_md: Path, figures_dir: Path | None) -> list[str]:
    """The profile-correction metrics section, linking each method's embedding figure where ``bench report`` wrote one."""
    from .profiles import correction_sections

    def figure_link(method: str, split: str) -> str | None:
        file = figures_dir / "report" / f"{method}_{split}" / EMBEDDING_FIGURE if figures_dir is not None else None
        return _rel(file, out_md.parent) if file is not None and file.is_file() else None

    return correction_sections(records, figure_link)


def _scenarios(records: list[Record], name: str, fp: str, out_md: Path, figures_dir: Path | None,
               result: LeaderboardResult, baseline: str) -> list[str]:
    """The scenario sections of one dataset version (with their figures when ``figures_dir`` is set)."""
    from .scenarios import scenario_sections

    def figure_path(scenario: str) -> tuple[Path, str]:
        file = figures_dir / f"scenario_{scenario}_{name}-{fp}.png"
        result.figures.append(file)
        return file, _rel(file, out_md.parent)

    return scenario_sections(records, baseline, figure_path if figures_dir is not None else None)


def build_leaderboard(results_dir: Path | str = DEFAULT_RESULTS, out_md: Path | str = DEFAULT_OUT, *,
                      include_quick: bool = False, figures: bool = True,
                      baseline: str = BASELINE, verify_metrics: bool = False) -> LeaderboardResult:
    """Rebuild the leaderboard markdown (and figures in ``<out_md dir>/figures``) from the records.

    Raises :class:`NoRecordsError` (and writes nothing) when no record could fill a row.

    Parameters
    ----------
    results_dir
        Folder of run records (as written by ``bench run``).
    out_md
        Markdown file to write.
    include_quick
        Also count records of the ``--quick`` smoke profile (excluded by default).
    figures
        Draw the seaborn figure of accuracy by method and split.
    baseline
        Method the paired differences are taken to (``erm``).
    verify_metrics
        Recompute every record's metrics from its predictions (and check its labels against the dataset
        when it is on this machine) and refuse the records that disagree (:mod:`benchmark.leaderboard.record_check`);
        ``bench leaderboard`` always does.
    """
    results_dir, out_md = Path(results_dir), Path(out_md)
    found: RecordSet = load_records(results_dir)
    result = LeaderboardResult(out_md)
    from ..registry import method_entries

    installed = {name: entry.origin for name, entry in method_entries().items()}  # plugins from metadata, not imported
    screened, rejected = screen_records(found.ok + found.quick + found.failed, installed)
    keep = {id(r) for r in screened}
    found.ok, found.quick, found.failed = ([r for r in part if id(r) in keep]
                                           for part in (found.ok, found.quick, found.failed))
    refused = _refuse(found, include_quick, result) if verify_metrics else []
    shown_rejected = rejected if include_quick else [(r, why) for r, why in rejected
                                                      if r.profile != QUICK or r.status != "ok"]
    used, superseded = newest_config(found.ok + (found.quick if include_quick else []))
    if not used:
        raise NoRecordsError(_no_records_reason(results_dir, out_md, found, rejected, refused))
    result.n_records = len(used)
    groups: dict[tuple[str, str], tuple[list[Record], list[Record]]] = defaultdict(lambda: ([], []))
    for r in used:
        groups[(r.dataset, r.fingerprint)][0].append(r)
    for r in found.failed:
        groups[(r.dataset, r.fingerprint)][1].append(r)
    fps_of: dict[str, list[str]] = defaultdict(list)
    for name, fp in sorted(groups):
        fps_of[name].append(fp)
    lines = ["# platebench leaderboard", "",
             f"Generated by `bench leaderboard` from the run records under `{results_dir.as_posix()}` alone; "
             "do not edit by hand. Task: mechanism-of-action classification of the 8 JUMP positive "
             "controls on plates of new batches and new labs (docs/protocol.md).", ""]
    figures_dir = out_md.parent / "figures" if figures else None
    for name, fp in sorted(groups):
        others = [o for o in fps_of[name] if o != fp]
        if others and fp == fps_of[name][0]:
            result.warnings.append(f"dataset '{name}' has records of {len(fps_of[name])} data versions "
                                   f"({', '.join(fps_of[name])}); they are reported in separate tables")
        ok, failed = groups[(name, fp)]
        lines += _dataset_section(name, fp, ok, failed, others, results_dir, out_md, figures_dir, result,
                                  baseline)
    lines += _reported_section() + [""]
    lines += _exclusions(found, include_quick, results_dir, result, shown_rejected)
    lines += _superseded_section(superseded, result)
    lines += _refused_section(refused, results_dir)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_md.with_name(f".{out_md.name}.tmp-{os.getpid()}")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    os.replace(tmp, out_md)
    return result


def _superseded_section(superseded: list[Superseded], result: LeaderboardResult) -> list[str]:
    """The note on records set aside for a newer config of their method (nothing when there are none)."""
    if not superseded:
        return []
    result.warnings += [group.reason() for group in superseded]
    return ["## Superseded records", "", "A row averages the records of one config only (the newest); these are left "
            "out until they are rerun:", ""] + [f"- {group.reason()}" for group in superseded] + [""]


def _first_refusal(refused: list[tuple[Record, list[str]]] | None) -> str:
    from .record_check import refusal

    return refusal(refused[0][0].path, refused[0][1]) if refused else ""


def _refuse(found: RecordSet, include_quick: bool, result: LeaderboardResult) -> list[tuple[Record, list[str]]]:
    """Check the records the board would use (:func:`benchmark.leaderboard.record_check.check_records`) and drop the refused
    ones from ``found``; one warning line per refused record, and one per dataset whose labels went unchecked."""
    from .record_check import check_records, refusal

    checked = check_records(found.ok + (found.quick if include_quick else []))
    out = {id(r) for r, _ in checked.refused}
    found.ok, found.quick = ([r for r in part if id(r) not in out] for part in (found.ok, found.quick))
    result.warnings += [refusal(r.path, problems) for r, problems in checked.refused]
    result.warnings += [f"labels of the records of {name}-{fp} were not checked: that dataset is not on this machine "
                        "(generate or prepare it to check them; the metrics were recomputed all the same)"
                        for name, fp in sorted(checked.unchecked_labels)]
    return checked.refused


def _refused_section(refused: list[tuple[Record, list[str]]], results_dir: Path) -> list[str]:
    """The "Refused records" note (nothing when every record passed)."""
    from .record_check import summary

    if not refused:
        return []
    lines = ["## Refused records", "",
             f"{len(refused)} record(s) are left out: their stored metrics or fields disagree with their predictions "
             "file (or their dataset's labels), from which `bench leaderboard` recomputes every metric. Rerun their "
             "commands to replace them.", ""]
    return lines + [f"- `{_rel(r.path, results_dir)}`: {summary(problems)}" for r, problems in refused] + [""]


def _exclusions(found: RecordSet, include_quick: bool, results_dir: Path, result: LeaderboardResult,
                rejected: list[tuple[Record, str]]) -> list[str]:
    lines = []
    if rejected:
        lines.append(f"- {len(rejected)} record(s) rejected:")
        lines += [f"  - `{_rel(r.path, results_dir)}`: {why}" for r, why in rejected]
        for why in dict.fromkeys(why for _, why in rejected):
            n = sum(w == why for _, w in rejected)
            result.warnings.append(f"rejected {n} record(s): {why}")
    if found.failed:
        result.warnings.append(f"{len(found.failed)} failed run record(s) are not included "
                               f"(first: {found.failed[0].label()}: {found.failed[0].data.get('error')})")
    if found.quick and not include_quick:
        lines.append(f"- {len(found.quick)} record(s) of the `--quick` smoke profile are excluded.")
    if found.outdated:
        formats = sorted({str(v) for _, v in found.outdated})
        lines.append(f"- {len(found.outdated)} record(s) of an older record format (format {', '.join(formats)}; "
                     f"this version reads {RECORD_FORMAT}) are not included; rerun their commands to refresh them:")
        lines += [f"  - `{_rel(p, results_dir)}`" for p, _ in found.outdated]
        result.warnings.append(f"{len(found.outdated)} record(s) of an older format are not included "
                               f"(first: {found.outdated[0][0]}); rerun their commands with --force")
    if found.invalid:
        lines.append(f"- {len(found.invalid)} damaged record(s) are not included:")
        lines += [f"  - `{_rel(p, results_dir)}`: {why}" for p, why in found.invalid]
        result.warnings.append(f"{len(found.invalid)} damaged record(s) are not included "
                               f"(first: {found.invalid[0][0]}: {found.invalid[0][1]})")
    return (["## Records not included", ""] + lines + [""]) if lines else []
