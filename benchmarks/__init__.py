"""One module per figure, each ending with one JSON line: `python -m benchmarks.NAME`."""
