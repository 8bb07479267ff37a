"""Metrics for generated talking-face videos (docs/design.md §6), one file per metric.

sync (LSE-C / LSE-D offset search), fid / fvd (Fréchet distances, via frechet), identity,
jitter; features (the fixed feature space of the synthetic world), mouth (the trained
mouth-state estimator, weights in weights/), extractors (InceptionV3, I3D, SyncNet for real
video), suite (all of them over pred/ref clip pairs). CLI: python -m benchmarks.evaluate.
"""
