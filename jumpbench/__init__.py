"""jumpbench: generators and a benchmark harness for consistent, jumpy generative models
(JUMP: Kumar, Eslami et al., "Consistent Generative Query Networks", ICLR 2019)."""

__version__ = "0.1.0"
