"""The benchmark harness. At this level, what every part of it shares: a run's configuration
(config.py, from the presets in presets/), its folder (runs.py), its batches (batches.py) and
the machine it runs on (machine.py). Below it, one subpackage per purpose: training/ (the
loop, sweeps, TensorBoard), evaluation/ (min-MSE, the probes and their scores, KL1/KL3),
figures/ (run folders to statistics, the paper's figures and sample grids) and speed/ (the
speed benchmarks). docs/architecture.md draws the parts and which imports which."""
