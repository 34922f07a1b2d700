"""A training step replayed from CUDA graphs (`train.cuda_graph=true`), for legs on a GPU.

At this project's sizes a GPU step waits on the host: a `cpu`-preset JUMP step took about 35 ms
on an H100 at batch 16, nearly all of it spent queueing some thousands of small kernels. A CUDA
graph records the kernels of a step once and replays them with one launch.

What is captured and what is not:
- captured: the model's forward (at the run's precision) and its backward, once per batch
  shape. A jumpy batch draws its number of context views M and of targets K at every step
  (batches.random_split), and a graph's shapes are fixed, so there is one graph per (M, K),
  captured the first time that shape comes (36 for 12-frame videos with up to 6 and 6);
- fed before every replay: the batch, copied into the graph's own input tensors, and the
  step's schedule (`Model.step_inputs`: JUMP's and GQN's pixel variance), so that a replay
  computes exactly the step it is given. A model whose forward reads the step in ways a
  replay cannot be fed has no step_inputs and is refused;
- eager, after the replay: gradient clipping and Adam (a few multi-tensor kernels), so the
  optimizer, its checkpoint and the learning-rate schedule are those of every other leg.

Noise: every step seeds its own (train.py). Capturing draws noise while it warms up, so the
generator's state is put back before the step's replay: a step draws the same noise whether
or not it captured a graph first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from jumpbench.errors import JumpbenchError

MAX_GRAPHS = 64  # batch shapes (M, K) a run may capture; 12-frame videos need 36
WARMUP = 3       # eager forward/backward passes on a side stream before a capture (lazy init, cuDNN choices)


def check(tc, model_cls: type, device: torch.device, world: int) -> None:
    """Refuse train.cuda_graph where it cannot work, in one line, before a run writes anything."""
    from jumpbench.models.base import Model

    if not tc.cuda_graph:
        return
    if device.type != "cuda":
        raise JumpbenchError(f"train.cuda_graph: this run trains on the {device.type}, and CUDA graphs need a "
                             "CUDA GPU; set train.cuda_graph=false")
    if world > 1:
        raise JumpbenchError("train.cuda_graph: a data-parallel run (--procs) is not captured; train it with "
                             "train.cuda_graph=false")
    if tc.compile:
        raise JumpbenchError("train.cuda_graph and train.compile are two ways to the same end; set one of them")
    if model_cls.step_inputs is Model.step_inputs:
        raise JumpbenchError(f"train.cuda_graph: {model_cls.__name__}'s loss reads the training step in ways a "
                             "replayed graph cannot be fed (it has no Model.step_inputs); set train.cuda_graph=false")


@dataclass
class _Graph:
    """One captured shape: its input tensors (filled before each replay), its outputs and the
    parameters' gradients (written by each replay), and the graph."""
    inputs: dict
    out: dict
    grads: list
    graph: object
    step: int  # the step it was captured at (what the step's Python values were then)


class GraphedStep:
    """`step(batch, step)` -> the loss terms of `loss(batch, step)` (the loop's forward: a dict
    with "loss"), with the gradients of "loss" left in the parameters' .grad, as forward plus
    backward would leave them, replayed from the graph of the batch's shape. The outputs are
    the graph's own tensors: read them (the loop adds them to its sums) before the next step."""

    def __init__(self, model: torch.nn.Module, loss: Callable[[dict, int], dict], device: torch.device):
        self.model, self.loss, self.device = model, loss, device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.graphs: dict[tuple, _Graph] = {}

    def __call__(self, batch: dict, step: int) -> dict:
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(batch.items()))
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._new(batch, step)
        for k, v in batch.items():
            entry.inputs[k].copy_(v, non_blocking=True)
        for k, v in self.model.step_inputs(step).items():
            entry.inputs[k].fill_(v)
        self._replay(entry)
        for p, g in zip(self.params, entry.grads):
            p.grad = g
        return entry.out

    def _new(self, batch: dict, step: int) -> _Graph:
        if len(self.graphs) >= MAX_GRAPHS:
            raise JumpbenchError(f"train.cuda_graph: more than {MAX_GRAPHS} batch shapes; set train.cuda_graph=false")
        inputs = {k: v.detach().clone() for k, v in batch.items()}
        inputs.update({k: torch.tensor(v, dtype=torch.float32, device=self.device)
                       for k, v in self.model.step_inputs(step).items()})
        rng = _rng_state(self.device)
        out, grads, graph = self._capture(inputs, step)
        _set_rng_state(self.device, rng)
        return _Graph(inputs, out, grads, graph, step)

    def _forward_backward(self, inputs: dict, step: int) -> dict:
        for p in self.params:
            p.grad = None  # backward allocates them: inside a capture, in the graph's own memory
        out = self.loss(inputs, step)
        out["loss"].backward()
        return {k: v.detach() for k, v in out.items()}

    def _capture(self, inputs: dict, step: int) -> tuple[dict, list, object]:
        """Warm up on a side stream, then record one forward and backward (PyTorch's recipe for
        capturing a whole step: docs, "CUDA Graphs")."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                self._forward_backward(inputs, step)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._forward_backward(inputs, step)
        return out, [p.grad for p in self.params], graph

    def _replay(self, entry: _Graph) -> None:
        entry.graph.replay()


def _rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)
