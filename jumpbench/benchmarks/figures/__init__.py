"""Figures: run folders to statistics and the summary table (results.py), what every figure
shares: matplotlib without a display, the model order, saving with a JSON of what was drawn
(common.py), and the paper's figures: curves (plot.py) and sample grids (grids.py)."""
