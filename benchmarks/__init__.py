"""rtbench benchmarks: micro (pytest-benchmark) and macro (writing to reports/)."""
