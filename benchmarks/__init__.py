"""Benchmarks: each module measures one thing and records it in results/<name>.json."""
