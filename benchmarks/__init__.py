"""Speed and memory benchmarks: each prints a table of ratios measured in the same run and writes
benchmarks/results/<name>.md. Run with ``python -m benchmarks.<name>`` (``--quick`` for a smoke run)."""
