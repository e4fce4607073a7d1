"""Benchmarks behind `wwm bench`: each prints our figures side by side with the peer's, as a ratio."""
