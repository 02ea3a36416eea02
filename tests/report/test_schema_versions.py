"""results.json version 2 writes every counter of ``totals``; version 1 files still read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec

from rtbench.cli import main
from rtbench.exitcodes import ExitCode
from rtbench.results import SCHEMA, Totals, read_results, write_results
from tests.report.factory import make_results

ROOT = Path(__file__).resolve().parents[2]
V1_BASELINE = ROOT / "tests" / "report" / "data" / "results-v1.json"  # a version 1 file


def test_every_counter_is_written_zeros_included(tmp_path: Path) -> None:
    results = make_results()
    zeros = msgspec.structs.replace(results.totals, lost=0, duplicated=0, errors_by_code={})
    results = msgspec.structs.replace(results, totals=zeros)
    path = write_results(results, tmp_path / "results.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == SCHEMA == "rtbench.results/2"
    totals = doc["totals"]
    assert set(totals) == set(Totals.__struct_fields__)  # nothing left out
    assert totals["lost"] == 0 and totals["duplicated"] == 0  # `jq .totals.lost` reads 0
    assert totals["out_of_order"] == 0 and totals["errors_by_code"] == {}
    assert read_results(path).totals == results.totals


def test_a_version_1_file_reads_with_missing_counters_as_zero(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(V1_BASELINE.read_text())
    assert doc["schema"] == "rtbench.results/1" and "lost" not in doc["totals"]
    old = read_results(V1_BASELINE)
    assert old.totals.lost == 0 and old.totals.delivered == doc["totals"]["delivered"]
    copy = tmp_path / "v1" / "results.json"
    copy.parent.mkdir()
    shutil.copy(V1_BASELINE, copy)
    assert main(["report", str(copy)]) == ExitCode.OK
    assert (copy.parent / "report.html").read_text().startswith("<!doctype html>")
    new = write_results(old, tmp_path / "v2" / "results.json")  # re-written as version 2
    code = main(["compare", str(copy), str(new)])
    out, err = capsys.readouterr()
    assert code == ExitCode.OK, out + err
