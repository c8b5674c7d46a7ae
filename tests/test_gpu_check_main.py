"""The GPU check script on the CPU: `--cpu-smoke` writes a well-formed report; stages fail, time out and skip alone."""

import re
import subprocess
import sys

import pytest

from benchmark.gpu_check import StageResult, main, render_report
from benchmark.gpu_check.processes import finish

SECTIONS = ["## Machine", "## 1. Packed store vs one TIFF per site", "## 2. ResNet-50 training throughput",
            "## 3. Data-wait share of a training step (real loader)", "## 5. Peak GPU memory", "## Summary"]


def cells(line):
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def tables(text):
    """Every markdown table of ``text`` as (header, rows); asserts each is well-formed."""
    found, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            header, rule = cells(line), lines[i + 1]
            assert rule == "|" + "---|" * len(header), (line, rule)
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                assert len(cells(row)) == len(header), (header, row)
                rows.append(dict(zip(header, cells(row))))
            found.append((header, rows))
    return found


def section(text, title):
    start = text.index(title + "\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end > 0 else None]


def test_cpu_smoke_writes_a_well_formed_report_here_and_in_out(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    report = tmp_path / "docs" / "gpu_report.md"
    rc = main([str(report), "--cpu-smoke", "--in-process", "--only", "resnet50,loader,data_wait",
               "--workdir", str(tmp_path / "work")])
    assert rc == 0
    text = report.read_text()
    assert (tmp_path / "out" / "gpu_report.md").read_text() == text
    assert text.startswith("# GPU check report — ") and "mode `smoke`" in text
    positions = [text.index(s + "\n") for s in SECTIONS]
    assert positions == sorted(positions)
    for title in SECTIONS[:4]:
        assert "Status: **ok**" in section(text, title), section(text, title)
    assert "Every stage finished." in text
    machine = dict((r["what"], r["value"]) for r in tables(section(text, "## Machine"))[0][1])
    assert {"torch", "CUDA (torch build)", "cuDNN", "CPU", "/dev/shm", "platebench"} <= set(machine)
    ((_, loader),) = tables(section(text, SECTIONS[1]))
    assert len(loader) == 8 and {r["page cache"] for r in loader} == {"cold", "warm"}
    assert all(int(r["images/s"]) > 0 for r in loader), loader
    assert "Settings: images = 64; image = 5×32×32 uint8; batch = 8" in section(text, SECTIONS[1])
    ((_, train),) = tables(section(text, SECTIONS[2]))
    assert [r["variant"].split(",")[0] for r in train] == ["bf16 autocast", "bf16 autocast", "float32"]
    assert all(float(r["images/s"]) > 0 for r in train)
    ((_, wait),) = tables(section(text, SECTIONS[3]))
    assert 0 <= float(wait[0]["data-wait share"]) <= 1 and int(wait[0]["steps"]) == 8
    ((header, memory),) = tables(section(text, SECTIONS[4]))
    assert [r["stage"] for r in memory] == ["resnet50", "loader", "data_wait"]
    assert not list((tmp_path / "work").iterdir())  # the work folder is removed


@pytest.mark.slow
def test_cpu_smoke_paper_stage_runs_bench_run_with_the_preset(tmp_path):
    report = tmp_path / "r.md"
    assert main([str(report), "--cpu-smoke", "--in-process", "--only", "paper"]) == 0
    text = report.read_text()
    assert "Status: **ok**" in section(text, "## Simulated dataset for stage 4")
    paper = section(text, "## 4. `bench run --preset paper` on a small simulated dataset")
    assert "--preset paper --folds 0 --seeds 0 --device cpu --set max_epochs=1" in paper
    ((_, (row,)),) = tables(paper)
    assert row["method"] == "erm" and row["status"] == "ok", row
    assert 0 <= float(row["out-of-domain acc."]) <= 1 and row["loader workers"] == "0"


def test_without_a_gpu_the_gpu_run_reports_why_and_exits_1(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    report = tmp_path / "r.md"
    assert main([str(report), "--only", "loader"]) == 1  # env runs in its own process, as on the GPU
    text = report.read_text()
    assert "Status: **ok**" in section(text, "## Machine")
    assert ("Status: **skipped** (0 s). Error: `torch sees no CUDA GPU here; run with --cpu-smoke to check the "
            "script on the CPU`") in section(text, SECTIONS[1])
    assert "1 stage(s) did not finish: `loader` (skipped)" in text
    assert f"gpu_check: wrote {report}; 1 stage(s) did not finish: loader" in capsys.readouterr().out


def _stage_process(code):
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def test_a_stage_past_its_time_box_is_killed_and_keeps_its_partial_result(tmp_path):
    result = tmp_path / "stage.json"
    code = f"import json, time; open({str(result)!r}, 'w').write(json.dumps({{'table': [{{'a': 1}}]}})); time.sleep(60)"
    stage = finish(StageResult("paper"), _stage_process(code), result, timeout=3, start=0.0)
    assert stage.status == "timed out" and stage.error == "killed after its time box of 3 s"
    assert stage.result == {"table": [{"a": 1}]}


def test_a_failing_stage_records_the_end_of_its_stderr(tmp_path):
    code = "import sys; print('first line', file=sys.stderr); raise RuntimeError('DataLoader worker killed: Bus error')"
    stage = finish(StageResult("loader"), _stage_process(code), tmp_path / "none.json", 30, 0.0)
    assert stage.status == "failed" and stage.error.startswith("exit code 1: first line | Traceback")
    assert stage.error.endswith("RuntimeError: DataLoader worker killed: Bus error")


def test_the_report_lists_failures_and_escapes_cells():
    stages = {"env": StageResult("env", "ok", 1.0, {"gpu": "NVIDIA H200", "table": [{"what": "GPU", "value": "a|b"}]}),
              "resnet50": StageResult("resnet50", "failed", 2.0, error="CUDA out of memory"),
              "loader": StageResult("loader", "skipped", error="the run's time budget was spent"),
              "data_wait": StageResult("data_wait", "ok", 3.0, {"settings": {"crop": 256},
                                                                "table": [{"workers": 8, "share": 0.02}],
                                                                "memory": {"torch_max_allocated_gib": 9.5}},
                                       card_peak_mib=12000)}
    text = render_report(stages, "gpu", "2026-01-01T00:00:00+00:00", 42.0)
    assert text.startswith("# GPU check report — NVIDIA H200\n")
    assert "| GPU | a\\|b |" in text and "Settings: crop = 256." in text
    assert "Status: **failed** (2 s). Error: `CUDA out of memory`" in text
    assert "2 stage(s) did not finish: `resnet50` (failed), `loader` (skipped)" in text
    memory = dict((r["stage"], r) for r in tables(section(text, "## 5. Peak GPU memory"))[0][1])
    assert memory["data_wait"]["torch max allocated GiB"] == "9.5"
    assert memory["data_wait"]["card peak MiB (nvidia-smi, all processes)"] == "12000"
    assert all(len(h) == len(set(h)) for h, _ in tables(text))


@pytest.mark.parametrize("args, message", [
    (["--in-process"], "--in-process needs --cpu-smoke"),
    (["--cpu-smoke", "--only", "nope"], "unknown stage(s) nope; valid: resnet50, loader, data_wait, synth, paper"),
])
def test_bad_options_are_refused(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_the_shell_script_calls_the_module():
    from _layout import ROOT

    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash") and "-m benchmark.gpu_check" in script
    assert (ROOT / "scripts" / "gpu_check.sh").stat().st_mode & 0o111  # executable
