"""A training step replayed from CUDA graphs (`train.cuda_graph=true`), for legs on a GPU.

At this project's sizes a GPU step waits on the host: a `cpu`-preset JUMP step took about 35 ms
on an H100 at batch 16, nearly all of it spent queueing some thousands of small kernels. A CUDA
graph records the kernels of a step once and replays them with one launch.

What is captured and what is not:
- captured: the model's forward (at the run's precision) and its backward, once per batch
  shape. A jumpy batch draws its number of context views M and of targets K at every step
  (batches.random_split), and a graph's shapes are fixed, so there is one graph per (M, K):
  36 for 12-frame videos with up to 6 and 6, all captured when the leg starts (`capture`),
  so that a capture that fails, or runs out of memory, fails at once. Each capture is
  checked: its first replay must give the loss of the eager pass it recorded, on the same
  inputs and the same noise. The graphs share one memory pool, which is safe here because a
  replay's outputs and gradients are read (the loop's sums, clipping, Adam) before the next
  replay, and the inputs live outside the pool;
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
REPLAY_RTOL = 1e-3  # a capture's first replay against the eager pass it recorded (TF32, kernel choices)


def why_not(model_cls: type, device: torch.device, world: int, compiled: bool) -> str | None:
    """Why a run of `model_cls` on `device` in `world` processes (`compiled`: train.compile)
    cannot replay its steps from CUDA graphs, in one line; None when it can."""
    from jumpbench.models.base import Model

    if device.type != "cuda":
        return (f"train.cuda_graph: this run trains on the {device.type}, and CUDA graphs need a CUDA GPU; "
                "set train.cuda_graph=false")
    if world > 1:
        return "train.cuda_graph: a data-parallel run (--procs) is not captured; train it with train.cuda_graph=false"
    if compiled:
        return "train.cuda_graph and train.compile are two ways to the same end; set one of them"
    if model_cls.step_inputs is Model.step_inputs:
        return (f"train.cuda_graph: {model_cls.__name__}'s loss reads the training step in ways a replayed graph "
                "cannot be fed (it has no Model.step_inputs); set train.cuda_graph=false")
    return None


def check(tc, model_cls: type, device: torch.device, world: int) -> None:
    """Refuse train.cuda_graph where it cannot work (why_not), in one line, before a run writes anything."""
    why = why_not(model_cls, device, world, tc.compile) if tc.cuda_graph else None
    if why:
        raise JumpbenchError(why)


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
        self.pool = None  # the graphs' shared memory pool, once the first is captured

    def capture(self, batches: list[dict], step: int) -> int:
        """Capture the graph of each batch's shape not captured yet (batches.shape_batches: one
        per shape the run draws), at `step`; returns how many graphs there are."""
        for batch in batches:
            key = _key(batch)
            if key not in self.graphs:
                self.graphs[key] = self._new(batch, step)
        return len(self.graphs)

    def __call__(self, batch: dict, step: int) -> dict:
        key = _key(batch)
        entry = self.graphs.get(key)
        if entry is None:  # a shape capture() was not given
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
        out, grads, graph, eager = self._capture(inputs, step)
        entry = _Graph(inputs, out, grads, graph, step)
        _set_rng_state(self.device, rng)  # the noise of the first warm-up pass again
        self._replay(entry)
        _set_rng_state(self.device, rng)  # the step that comes next draws its own, as it would eagerly
        if not torch.allclose(entry.out["loss"], eager, rtol=REPLAY_RTOL):  # one read of the device per shape
            raise JumpbenchError(f"train.cuda_graph: the step replayed from the graph of shapes {_shapes(batch)} "
                                 f"gave the loss {float(entry.out['loss']):.6g} where the eager pass it recorded "
                                 f"gave {float(eager):.6g}; set train.cuda_graph=false")
        return entry

    def _forward_backward(self, inputs: dict, step: int) -> dict:
        for p in self.params:
            p.grad = None  # backward allocates them: inside a capture, in the graph's own memory
        out = self.loss(inputs, step)
        out["loss"].backward()
        return {k: v.detach() for k, v in out.items()}

    def _capture(self, inputs: dict, step: int) -> tuple[dict, list, object, torch.Tensor]:
        """Warm up on a side stream, then record one forward and backward (PyTorch's recipe for
        capturing a whole step: docs, "CUDA Graphs"). Returns the graph's outputs, its
        gradients, the graph, and the loss of the first warm-up pass (eager)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            eager = self._forward_backward(inputs, step)["loss"].clone()
            for _ in range(WARMUP - 1):
                self._forward_backward(inputs, step)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self._forward_backward(inputs, step)
        self.pool = graph.pool()
        return out, [p.grad for p in self.params], graph, eager

    def _replay(self, entry: _Graph) -> None:
        entry.graph.replay()


def _key(batch: dict) -> tuple:
    return tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(batch.items()))


def _shapes(batch: dict) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in batch.items())


def _rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)
