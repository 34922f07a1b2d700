"""Training: the one training loop for every model (train.py), the seed and grid sweeps that
run it in one or several processes (sweep.py), and a run's TensorBoard events (board.py).
Each run is a runs.RunSpec trained into its run folder through runs.Run."""
