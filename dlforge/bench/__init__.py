"""Latency and throughput measurement (numpy only)."""
