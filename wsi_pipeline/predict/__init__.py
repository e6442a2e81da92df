"""Predicting new, unlabelled slides with a trained run: probabilities, patient rows, heatmaps (`wsi predict`).

`config.PredictConfig` (torch-free, so `wsi --help` stays instant) and `run.run_prediction`.
"""
