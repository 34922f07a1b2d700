"""Ground-truth consistency scores of sampled videos and views (issue 13).

jumpbench owns its generators, so it knows the truth of every test scene; a probe trained on
true frames only (probes.py) reads each sampled frame, and the scores say, in numbers a reader
understands, whether the samples tell a story the dataset could have told:

- Traveling Salesman, forwards from the first m frames: `route_validity`, the fraction of
  sampled continuations in which the salesman follows a route, i.e. at the narrative's visit
  frames (narratives.visit_frames: 5, 10, 14, 19 of 20) it touches the first target (fixed by
  the context), then each of the other three shapes once, in some order, and in between it is
  present in every frame and moves in a straight line at a steady pace (within CONT_TOL of
  the line between its visits), and the other four shapes stay as they are (each read in every
  sampled frame in its colour in the context, but where the salesman passes over it);
  `route_coverage`, the number of distinct valid orders among the samples of a video (at most
  3! = 6), averaged over videos; `route_visits`, a partial credit: the fraction of the sampled
  visit frames at which the salesman touches a shape it has not visited yet (the first target
  at the first).
- Color Reaction: `reaction_forward`, from the first m frames, the fraction of samples in
  which shape 1 (the mover, shape 0 in the records) touches shape 2 from the narrative's
  arrival frame on, shape 2 keeps its colour until then and changes to one other colour at
  the next frame (narratives.reaction_frames: 5 and 6 of 12), and shape 1 is seen in every
  frame in the one colour it has throughout (the narrative never recolours it: a sample in
  which the colour change reaches both shapes tells a story the dataset cannot tell);
  `reaction_backward`, from the last m frames (jumpy models only), the same test of the
  composed video, i.e. the earlier colour is drawn up to the touch and the later one after it.
- MNIST Dice, hidden-face protocol (3 context views where one face is invisible, 3 query
  views where it is clearly visible): `agreement`, the fraction of samples in which a digit is
  read on the hidden face and it is the same in all 3 query views; `diversity`, the number of
  distinct digits read (in the clearest query view) across the samples of a scene, averaged.

Each score is given for the model, for the ground truth (which must be about 1 for validity
and agreement; its coverage and diversity are 1, one continuation per scene) and for the
sanity baselines (repeat the context frame next to the queries, black frames, the true frames
shuffled in time; dice: the mean context view, black), so that a model can be placed between
them. A sampled frame is scored inside its video: the context frames are the true ones.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from jumpbench import dataset as DS
from jumpbench.benchmarks import batches as B
from jumpbench.benchmarks.evaluation import probes as P
from jumpbench.errors import JumpbenchError
from jumpbench.models.base import sample_chunks
from jumpbench.generators import narratives as N

CONT_TOL = 6.0  # native pixels (3 at 32x32): the salesman's distance from its straight path
KEYS = {"traveling_salesman": ("route_validity", "route_coverage", "route_visits"),
        "color_reaction": ("reaction_forward", "reaction_backward"),
        "mnist_dice": ("agreement", "diversity")}
LABELS = {"route_validity": "route validity", "route_coverage": "route coverage (of 6)",
          "route_visits": "visits to a new shape",
          "reaction_forward": "reaction, forwards", "reaction_backward": "reaction, backwards",
          "agreement": "hidden-face agreement", "diversity": "digits per scene"}
# The definition of each dataset's scores, recorded with them (`scores_definition` in scores.json and
# in the evaluation rows that carry test_score_*): scores of another definition are not compared
# with today's (results.collect leaves them out, and `jumpbench plot` says which runs to rescore).
# Color Reaction 2: the mover must keep its colour (1 did not look at it, and passed samples in
# which both shapes change colour).
# Traveling Salesman 2: the other shapes must stay drawn (1 did not look at them).
DEFINITIONS = {"traveling_salesman": 2, "color_reaction": 2, "mnist_dice": 1}
REFERENCES = {"truth": "ground truth", "repeat": "repeat the nearest context frame", "black": "black frames",
              "shuffled": "true frames shuffled in time", "mean_context": "the mean context view"}


# ---------------------------------------------------------------- one scene's samples -> verdicts

def route(r: dict, meta: dict, m: int) -> tuple[np.ndarray, list[tuple], np.ndarray]:
    """Readings of n composed videos (n, T) of one Traveling Salesman scene -> (valid (n,),
    the visiting order of each valid sample, else None, the fraction of the sampled visit
    frames at which the salesman touches a shape it has not visited yet (n,))."""
    t = r["touch"].shape[1]
    order, ends = [int(o) for o in meta["order"]], N.visit_frames(t)
    fixed = [k for k, e in enumerate(ends) if e <= m]           # visits the context decides
    anchors = [0] + ends
    native = meta.get("_native", 64)
    tol = CONT_TOL * native / 64
    pos, rad = np.asarray(meta["positions"])[0, 1:], P.radii(meta, native)
    valid, orders, visits = [], [], []
    for j in range(len(r["touch"])):
        seen, new = {order[k] for k in fixed if ends[k] < m}, 0
        for k, e in enumerate(ends):
            if e >= m:
                hit = [s for s in np.flatnonzero(r["touch"][j, e])
                       if s not in seen and (k not in fixed or s == order[k])]
                new += bool(hit)
                seen.update(hit[:1])
        visits.append(new / sum(e >= m for e in ends))
        seq = None
        for rest in itertools.permutations(sorted(set(order) - {order[k] for k in fixed})):
            cand = [order[k] for k in fixed] + list(rest)
            if all(e < m or r["touch"][j, e, cand[k]] for k, e in enumerate(ends)):
                seq = tuple(cand)
                break
        ok = seq is not None and all(r["present"][j, e] for e in ends if e >= m)
        c = r["centre"][j]
        line = c.copy()  # where the salesman should be: on the straight line between its visits
        for a, b in zip(anchors, anchors[1:]):
            for f in range(max(a + 1, m), b):
                line[f] = c[a] + (f - a) / (b - a) * (c[b] - c[a])
                if (np.linalg.norm(line[f] - pos, axis=1) < rad[0] + rad[1:]).any():
                    continue  # over another shape it may be hidden: not checked
                ok = ok and bool(r["present"][j, f]) and float(np.linalg.norm(c[f] - line[f])) <= tol
        # the other shapes stay as they are: each is read in every sampled frame in the colour it
        # is read in the (true) context frames, except where the salesman is over it (by its line
        # or as read): its pixels and their blend with the shape's read as any colour there (so
        # the context's frames with the salesman over it do not count; in all of them: the truth)
        over = np.linalg.norm(np.stack([line, c])[:, :, None] - pos, axis=-1) < rad[0] + rad[1:]  # (2, T, 4)
        over = over[0] | (over[1] & r["present"][j][:, None])
        kept = [np.bincount(col[~o] + 1).argmax() - 1 if (~o).any() else -1    # the context's commonest
                for col, o in zip(r["colors"][j, :m, 1:].T, over[:m].T)]
        kept = np.where(np.asarray(kept) >= 0, kept, meta["colors"][1:])  # not read there: the truth
        ok = ok and bool(((r["colors"][j, m:, 1:] == kept) | over[m:]).all())
        valid.append(ok)
        orders.append(seq if ok else None)
    return np.asarray(valid, bool), orders, np.asarray(visits)


# The checks of the reaction, each (n,) bool, in the order a reader follows the story: the mover
# reaches shape 2 and stays; shape 2 shows one colour up to the change and one from it on, and
# the two differ; the mover keeps its colour. A sample passes when it passes them all; `jumpbench
# score` gives each check's pass rate too (test_score_reaction_<direction>_<check>), which says
# what the failing samples get wrong.
REACTION_CHECKS = {"touch": "touches shape 2 from the arrival on", "before": "shape 2 keeps its colour up to it",
                   "after": "shape 2 shows one colour from the change on", "changed": "two colours, and they differ",
                   "mover": "the mover keeps its colour"}


def reaction_checks(r: dict, meta: dict) -> dict[str, np.ndarray]:
    """Readings of n composed Color Reaction videos (n, T) -> {check: passed (n,)}."""
    t = r["touch"].shape[1]
    arrive, change = N.reaction_frames(t)
    col, mover = r["colors"][:, :, 1], r["colors"][:, :, 0]
    before, after = col[:, :change], col[:, change:]

    def one_colour(c):  # read (not background) and the same in every frame
        return (c == c[:, :1]).all(1) & (c[:, 0] >= 0)
    return {"touch": r["touch"][:, arrive:, 1].all(1), "before": one_colour(before), "after": one_colour(after),
            "changed": (before[:, 0] != after[:, 0]) & (before[:, 0] >= 0) & (after[:, 0] >= 0),
            "mover": one_colour(mover)}



class Scorer:
    """Reads the samples of a fixed list of test scenes, chunk by chunk, and scores them.
    `direction` "forward": the queries are frames m..T-1 (dice: the hidden-face views);
    "backward": frames 0..T-m-1 from the last m. `query` (Narratives): other frames in their
    place (another layout of context and queries, scripts/context_layouts.py)."""

    def __init__(self, probe: P.Probe, scenes: DS.Scenes, indices, m: int, direction: str = "forward",
                 query: list[int] | None = None):
        self.probe, self.m, self.direction = probe, m, direction
        self.dataset = scenes.ds.name
        self.indices = list(indices)
        self.metas = [{**scenes.meta(i), "_native": probe.native} for i in self.indices]
        self.dice = self.dataset == "mnist_dice"
        if self.dice:
            self.grids = []
            for meta in self.metas:
                q = np.asarray(meta["query_views"])[:3]
                self.grids.append(P.face_grids(np.asarray(meta["cameras"])[q], meta["die_position"],
                                               float(meta["die_yaw"]), [int(meta["hidden_face"])] * len(q)))
        else:
            self.frames = DS.to_float(B.stack(scenes, self.indices)["frames"])       # (B, T, 3, S, S)
            t = self.frames.shape[1]
            self.query = list(query) if query is not None else (
                list(range(m, t)) if direction == "forward" else list(range(t - m)))
        self.valid = [[] for _ in self.indices]
        self.found = [[] for _ in self.indices]  # visiting orders / digits read
        self.visits = [[] for _ in self.indices]
        self.checks: dict[str, list] = {k: [] for k in REACTION_CHECKS}  # Color Reaction: each check's verdicts

    def add(self, samples: torch.Tensor) -> None:
        """samples (B, n, Q, 3, S, S) for the scenes' queries."""
        samples = samples.detach().float().cpu().clamp(0, 1)
        for b, meta in enumerate(self.metas):
            if self.dice:
                n = samples.shape[1]
                digits = self.probe.read_digits(samples[b].reshape(-1, *samples.shape[-3:]),
                                                np.tile(self.grids[b], (n, 1, 1, 1))).reshape(n, -1)
                self.valid[b] += list((digits == digits[:, :1]).all(1) & (digits[:, 0] != P.NONE))
                self.found[b] += [d for d in digits[:, 0] if d != P.NONE]
                continue
            video = self.frames[b][None].repeat(samples.shape[1], 1, 1, 1, 1)
            video[:, self.query] = samples[b]
            r = self.probe.read_video(video, meta)
            if self.dataset == "traveling_salesman":
                ok, orders, visits = route(r, meta, self.m)
                self.valid[b] += list(ok)
                self.visits[b] += list(visits)
                self.found[b] += [o for o in orders if o is not None]
            else:
                checks = reaction_checks(r, meta)
                self.valid[b] += list(np.logical_and.reduce(list(checks.values())))
                for k, v in checks.items():
                    self.checks[k] += list(v)

    def result(self) -> dict:
        """The scores (module docstring) over the scenes added so far."""
        frac = float(np.mean([v for vs in self.valid for v in vs]))
        if self.dataset == "traveling_salesman":
            return {"route_validity": frac, "route_coverage": float(np.mean([len(set(f)) for f in self.found])),
                    "route_visits": float(np.mean([v for vs in self.visits for v in vs]))}
        if self.dataset == "color_reaction":
            return {f"reaction_{self.direction}": frac,
                    **{f"reaction_{self.direction}_{k}": float(np.mean(v)) for k, v in self.checks.items()}}
        return {"agreement": frac, "diversity": float(np.mean([len(set(f)) for f in self.found]))}


# ---------------------------------------------------------------- references: the truth and the baselines

def references(probe: P.Probe, scenes: DS.Scenes, indices, m: int, seed: int = 0) -> dict:
    """{reference: scores} of the ground truth and the sanity baselines, on the same scenes."""
    indices = list(indices)
    if scenes.ds.name == "mnist_dice":
        b = B.hidden_face_batch(scenes, indices, n_targets=3)
        truth, ctx = b["target_frames"], b["context_frames"]
        cands = {"truth": truth, "mean_context": ctx.mean(1, keepdim=True).expand_as(truth),
                 "black": torch.zeros_like(truth)}
        return {k: _score(probe, scenes, indices, m, "forward", v[:, None]) for k, v in cands.items()}
    frames = DS.to_float(B.stack(scenes, indices)["frames"])
    t = frames.shape[1]
    g = torch.Generator().manual_seed(seed)
    out = {}
    for direction in (("forward", "backward") if scenes.ds.name == "color_reaction" else ("forward",)):
        q = list(range(m, t)) if direction == "forward" else list(range(t - m))
        near = m - 1 if direction == "forward" else t - m
        truth = frames[:, q]
        perm = torch.stack([_derangement(len(q), g) for _ in indices])
        cands = {"truth": truth, "repeat": frames[:, near:near + 1].expand_as(truth),
                 "black": torch.zeros_like(truth), "shuffled": truth[torch.arange(len(indices))[:, None], perm]}
        for k, v in cands.items():
            out.setdefault(k, {}).update(_score(probe, scenes, indices, m, direction, v[:, None]))
    return out


def _derangement(n: int, g: torch.Generator) -> torch.Tensor:
    """A random permutation of n that moves every item (n >= 2)."""
    while True:
        p = torch.randperm(n, generator=g)
        if n < 2 or not (p == torch.arange(n)).any():
            return p


def _score(probe, scenes, indices, m, direction, samples) -> dict:
    s = Scorer(probe, scenes, indices, m, direction)
    s.add(samples)
    return s.result()


# ---------------------------------------------------------------- a model's samples

class RunScores:
    """The scores of a model on fixed test scenes: `visit` is given to min_mse, so that the
    forward scores read the very samples of the min-MSE; `finish(model)` draws what min_mse
    does not (Color Reaction backwards, the dice views) and returns test_score_* keys."""

    def __init__(self, probe: P.Probe, scenes: DS.Scenes, indices, m: int, n_samples: int, chunk: int = 10,
                 progress=None):
        self.probe, self.scenes, self.indices, self.m = probe, scenes, list(indices), m
        self.n_samples, self.chunk = n_samples, chunk
        self.forward = Scorer(probe, scenes, self.indices, m, "forward")
        self.progress = progress  # called with the number of samples in each chunk scored

    def draws(self, model) -> int:
        """How many samples per scene the scores read in all: `progress` counts up to it."""
        name = self.scenes.ds.name
        return self.n_samples * (2 if name == "color_reaction" and model.jumpy else 1)

    def visit(self, samples: torch.Tensor) -> None:
        self._add(self.forward, samples)

    def _add(self, scorer: "Scorer", samples: torch.Tensor) -> None:
        scorer.add(samples)
        if self.progress:
            self.progress(samples.shape[1])

    def finish(self, model, with_references: bool = True) -> dict:
        device = next(model.parameters()).device
        name = self.scenes.ds.name
        scores = {}
        if name == "mnist_dice":
            b = {k: v.to(device) for k, v in B.hidden_face_batch(self.scenes, self.indices, 3).items()}
            for s in sample_chunks(model, b["context_frames"], b["context_viewpoints"], b["target_viewpoints"],
                                   self.n_samples, self.chunk):
                self.visit(s)
        scores.update(self.forward.result())
        if name == "color_reaction":
            scores["reaction_backward"] = None
            if model.jumpy:
                back = Scorer(self.probe, self.scenes, self.indices, self.m, "backward")
                frames = back.frames.to(device)
                t = frames.shape[1]
                vps = torch.arange(t, dtype=frames.dtype, device=device).view(1, t, 1).expand(len(frames), t, 1)
                for s in sample_chunks(model, frames[:, t - self.m:], vps[:, t - self.m:], vps[:, back.query],
                                       self.n_samples, self.chunk):
                    self._add(back, s)
                scores.update(back.result())
        row = {f"test_score_{k}": v for k, v in scores.items()}
        row["scores_definition"] = DEFINITIONS[name]
        if with_references:
            for ref, vals in references(self.probe, self.scenes, self.indices, self.m).items():
                row.update({f"test_score_{ref}_{k}": v for k, v in vals.items()})
        return row


def for_evaluator(scenes: DS.Scenes, n: int, image_size: int, m: int, n_samples: int) -> RunScores | None:
    """The scores of a run's final evaluation, or None when no probe is trained for its
    dataset and size yet (training does not train one: `jumpbench probe train`)."""
    try:
        probe = P.load_probe(scenes.ds.root, image_size)
    except JumpbenchError:
        return None
    return RunScores(probe, scenes, range(n), m, n_samples)


def outdated(row: dict | None, dataset: str) -> bool:
    """Whether `row` (scores.json, or an evaluation row) carries test_score_* of another
    definition than today's for `dataset` (rows written before definitions were recorded: 1)."""
    return bool(row) and any(k.startswith("test_score_") for k in row) and \
        row.get("scores_definition", 1) != DEFINITIONS.get(dataset, 1)


def current(row: dict | None, dataset: str) -> dict | None:
    """`row` without its test_score_* when they are `outdated`."""
    if not outdated(row, dataset):
        return row
    return {k: v for k, v in row.items() if not k.startswith("test_score_") and k != "scores_definition"}


def split_row(row: dict) -> tuple[dict, dict]:
    """test_score_* keys -> ({key: model's value}, {reference: {key: value}})."""
    model, refs = {}, {}
    for k, v in row.items():
        if not k.startswith("test_score_"):
            continue
        name = k[len("test_score_"):]
        ref = next((r for r in REFERENCES if name.startswith(r + "_")), None)
        if ref:
            refs.setdefault(ref, {})[name[len(ref) + 1:]] = v
        else:
            model[name] = v
    return model, refs


def format_table(result: dict) -> str:
    model, refs = split_row(result)
    keys = KEYS[result["dataset"]]
    cols = [result["model"]] + list(refs)
    width = max(10, *(len(c) + 2 for c in cols))
    how = ("hidden-face protocol, 3 context and 3 query views" if result["dataset"] == "mnist_dice"
           else f"context {result['context']} frames")
    lines = [f"{result['model']} (step {result.get('step')}) on {result['dataset']} test: {result['n_scenes']} scenes "
             f"x {result['n_samples']} samples, {result['image_size']}px, {how}"
             + (f"; min-MSE of the same samples {result['test_min_mse']:.4f}" if "test_min_mse" in result else ""),
             ]
    rows = []  # (label, key): each score, and under a reaction score the pass rate of each of its checks
    for k in keys:
        rows.append((LABELS[k], k))
        rows += [(f"  {label}", f"{k}_{c}") for c, label in REACTION_CHECKS.items() if f"{k}_{c}" in model]
    pad = max(24, *(len(label) + 2 for label, _ in rows))
    lines.append(f"{'':<{pad}}" + "".join(f"{c:>{width}}" for c in cols))
    for label, k in rows:
        vals = [model.get(k)] + [refs[r].get(k) for r in refs]
        lines.append(f"{label:<{pad}}" + "".join(f"{'-' if v is None else f'{v:.3f}':>{width}}" for v in vals))
    lines.append("references: " + "; ".join(f"{r} = {REFERENCES[r]}" for r in refs))
    return "\n".join(lines)
