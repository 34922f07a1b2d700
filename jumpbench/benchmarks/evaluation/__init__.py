"""Evaluation: min-MSE over samples, the sanity baselines, the loop's periodic Evaluator and
the scoring of a trained run (evaluate.py); the probes trained on true frames (probes.py) and
the ground-truth consistency scores they give samples (scores.py); KL1 / KL3 and the test
NELBO on MNIST Dice (consistency.py)."""
