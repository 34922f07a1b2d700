"""Speed benchmarks (`jumpbench bench`): the time to sample frame t, jumpy or autoregressive
(speed.py, `bench jumpy`), and the milliseconds of a training step per model and variant
(train_speed.py, `bench train`)."""
