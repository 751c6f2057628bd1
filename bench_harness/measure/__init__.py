"""Measurement: GPU telemetry, inference latency, FLOPs, compaction of neuron-pruned models and saved size.

Each module does one job and imports nothing from the rest of the harness, so a measurement can be
reused (or tested) on any ``nn.Sequential`` chain without a run, a dataset or a plugin.
"""
