"""The markdown report of the GPU check: the machine, each stage's status, settings and table, peak memory, summary."""

from __future__ import annotations

from typing import Any

from .stages import STAGES, StageResult


def _cell(value: Any) -> str:
    return "–" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict[str, Any]]) -> list[str]:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows])


def render_report(stages: dict[str, StageResult], mode: str, started: str, total_s: float, finished: bool = True,
                  isolated: bool = True) -> str:
    """The markdown report of ``stages`` (``finished``: all that will run have run; ``isolated``: each in a process)."""
    env = stages.get("env")
    gpu = (env.result.get("gpu") if env and env.result else None) or "unknown"
    smoke = " --cpu-smoke" if mode == "smoke" else ""
    how = ("Each stage ran in its own process with its own time box" if isolated
           else "The stages ran in one process (`--in-process`), without time boxes")
    lines = [f"# GPU check report — {gpu}", "",
             f"Written by `scripts/gpu_check.sh` (`python -m benchmark.gpu_check{smoke}`) on {started}; mode "
             f"`{mode}`; " + (f"took {total_s:.0f} s" if finished else f"{total_s:.0f} s so far, still running")
             + f". {how}; a failed stage is recorded here and the others went on.", ""]
    if mode == "smoke":
        lines += ["> CPU smoke run at tiny sizes: it checks that the script works, its numbers mean nothing.", ""]
    for name, (title, _) in STAGES.items():
        stage = stages.get(name)
        if stage is None:
            continue
        lines += [f"## {title}", "", f"Status: **{stage.status}** ({stage.seconds:.0f} s)."
                  + (f" Error: `{_cell(stage.error)}`" if stage.error else ""), ""]
        settings = stage.result.get("settings")
        if settings:
            lines += ["Settings: " + "; ".join(f"{k} = {_cell(v)}" for k, v in settings.items()) + ".", ""]
        if stage.result.get("table"):
            lines += _table(stage.result["table"]) + [""]
    rows = [{"stage": name, "torch max allocated GiB": s.result.get("memory", {}).get("torch_max_allocated_gib"),
             "torch max reserved GiB": s.result.get("memory", {}).get("torch_max_reserved_gib"),
             "card peak MiB (nvidia-smi, all processes)": s.card_peak_mib}
            for name, s in stages.items() if name != "env"]
    lines += ["## 5. Peak GPU memory", "",
              "torch's allocator in the stage's own process (stages 2 and 3); the card's use polled from nvidia-smi "
              "every 0.5 s for every stage (stage 4's sealed workers included; `synth` runs alongside 1–3 and uses "
              "no GPU).", ""] + _table(rows) + [""]
    failed = [s for s in stages.values() if s.status != "ok"]
    lines += ["## Summary", "", (f"{len(failed)} stage(s) did not finish: "
                                 + ", ".join(f"`{s.name}` ({s.status})" for s in failed)) if failed
              else "Every stage finished."]
    return "\n".join(lines) + "\n"
