"""`bench data prepare jump` through the CLI on a local mirror."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from _jump_mirror import build_mirror
from benchmark.datasets.dataset import open_dataset
from benchmark.datasets.jump import prepare as prepare_module


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return build_mirror(tmp_path_factory.mktemp("jump-cli"), sites=1, small=True)


def _args(mirror, out, *extra):
    return ["prepare", "jump", "--root", str(mirror.root), "--metadata", str(mirror.metadata), "--out", str(out),
            "--min-sites", "0", "--crop", "32", "--workers", "2", *extra]


def test_help_documents_the_options(prepare_app, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("TERMINAL_WIDTH", "300")
    result = CliRunner().invoke(prepare_app, ["prepare", "jump", "--help"])
    assert result.exit_code == 0
    for word in ("--root", "--sources", "--no-reference-batch-filter", "--min-sites", "--out", "--workers",
                 "--max-plates", "--metadata", "raw.githubusercontent.com", "--yes"):
        assert word in result.output


def test_prepare_through_the_cli(prepare_app, mirror, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(prepare_app, _args(mirror, out, "--yes"))
    assert result.exit_code == 0, result.output
    assert "to do: 2 plates" in result.output and "skipped sites: none" in result.output
    assert f"bench data info {out}" in result.output
    assert len(open_dataset(out).plate_table()) == 2
    again = CliRunner().invoke(prepare_app, _args(mirror, out))
    assert again.exit_code == 0 and "2 of 2 plates already prepared" in again.output


def test_large_download_without_terminal_needs_yes(prepare_app, mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CONFIRM_ABOVE_BYTES", 0)
    result = CliRunner().invoke(prepare_app, _args(mirror, tmp_path / "out"))
    assert result.exit_code == 1
    assert "there is no terminal to ask for confirmation: pass --yes to go ahead" in result.output


def test_bad_options_are_one_line_errors(prepare_app, mirror, tmp_path):
    result = CliRunner().invoke(prepare_app, _args(mirror, tmp_path / "out", "--sources", "source_99"))
    assert result.exit_code == 1
    assert "error: source(s) source_99 are not in plate.csv.gz; valid sources: source_3, source_8" in result.output
    result = CliRunner().invoke(prepare_app, _args(mirror, tmp_path / "out", "--max-plates", "0"))
    assert result.exit_code == 1 and "--max-plates must be >= 1" in result.output
