"""jumpbench: generators and a benchmark harness for consistent, jumpy generative models
(JUMP: Kumar, Eslami et al., "Consistent Generative Query Networks", ICLR 2019).

The public API is what `__all__` names (docs/python.md); every other module, class and
function is internal and may change without notice. The names load on first use, so that
`import jumpbench` stays light (no torch until one of them is used).
"""

__version__ = "0.1.0"
__all__ = ["open_dataset", "load_run", "generate", "train", "JumpbenchError"]
_HOMES = {"open_dataset": "jumpbench.api", "generate": "jumpbench.api", "load_run": "jumpbench.benchmarks.runs",
          "train": "jumpbench.benchmarks.training.train", "JumpbenchError": "jumpbench.errors"}


def __getattr__(name):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'jumpbench' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
