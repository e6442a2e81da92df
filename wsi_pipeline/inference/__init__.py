"""Running a trained run on feature bags: its fold models, their probabilities and tile scores, and the
per-slide heatmap files. Shared by `wsi eval` (labelled slides) and `wsi predict` (unlabelled ones), so both
score a bag through exactly the same code."""
