"""SLO verdicts as JUnit XML, so a CI system lists each target as a test.

One ``<testsuite name="rtbench SLO">`` with one ``<testcase>`` per target, named by
the target alone (``delivery_latency``): CI tools track a test's history by its
name, and the threshold may change while the promise stays the same. A target the
run did not measure is ``<skipped>``: it is neither a pass nor a failure.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from rtbench.report.model import run_outcome, view_verdict
from rtbench.results import Results

SUITE_NAME = "rtbench SLO"


def render_junit(results: Results) -> str:
    views = [view_verdict(v) for v in results.verdicts]
    failures = sum(1 for v in views if v.verdict.failed)
    skipped = sum(1 for v in views if v.state == "not_measured")
    counts = {
        "tests": str(len(views)),
        "failures": str(failures),
        "errors": "0",
        "skipped": str(skipped),
        "time": f"{results.run.duration_s:.3f}",
    }
    root = ET.Element("testsuites", {"name": "rtbench", **counts})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": SUITE_NAME,
            **counts,
            "timestamp": results.run.started_at,
            "hostname": results.environment.hostname,
        },
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("run_id", results.run.id),
        ("scenario", results.run.scenario),
        ("target", results.run.target),
        ("engine", results.run.engine),
        ("generator_saturated", str(results.generator.saturated).lower()),
        ("outcome", run_outcome(results).headline),
    ):
        ET.SubElement(properties, "property", {"name": name, "value": value})
    kind = "check" if results.run.mode == "check" else results.run.scenario
    classname = f"rtbench.{kind}"
    for view in views:
        case = ET.SubElement(
            suite, "testcase", {"classname": classname, "name": view.target, "time": "0"}
        )
        summary = f"{view.target}: measured {view.measured}, objective {view.objective}"
        if view.state == "not_measured":
            ET.SubElement(case, "skipped", {"message": f"not measured: {view.detail}"})
        elif view.verdict.failed:
            untrusted = view.state == "untrustworthy"
            failure = ET.SubElement(
                case,
                "failure",
                {
                    "type": "untrustworthy" if untrusted else "slo_failed",
                    "message": ("untrustworthy (load generator saturated): " if untrusted else "")
                    + summary,
                },
            )
            failure.text = view.detail
        out = ET.SubElement(case, "system-out")
        out.text = f"{summary}; {view.label}: {view.detail}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
