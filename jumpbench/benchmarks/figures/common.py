"""What every figure shares: matplotlib without a display, the model order of legends and
tables (the registry's), and saving a figure with a JSON of exactly what was drawn."""
from __future__ import annotations

from pathlib import Path

from jumpbench.files import atomic_path, write_json_atomic


def plt():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def ordered(models) -> list[str]:
    """`models` in the registry's order (JUMP first), names it does not know after, sorted."""
    from jumpbench.models import MODELS

    return [m for m in MODELS if m in models] + sorted(m for m in models if m not in MODELS)


def save(fig, out: Path, name: str, data: dict) -> Path:
    """name.png, name.pdf and name.json (what was drawn) in out, each written atomically;
    closes the figure. The PDF carries no creation date, so the same runs redraw the same bytes
    (a regenerated figure shows in git only when what it draws changed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for suffix, kw in (("png", {"dpi": 130}), ("pdf", {"metadata": {"CreationDate": None}})):
        with atomic_path(out / f"{name}.{suffix}") as tmp:
            fig.savefig(tmp, format=suffix, bbox_inches="tight", **kw)
    plt().close(fig)
    write_json_atomic(out / f"{name}.json", data)
    return out / f"{name}.png"
