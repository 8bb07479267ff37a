"""Real-world feature extractors (InceptionV3 for FID, I3D for FVD, SyncNet for LSE).

Architectures written from the papers; weights from local safetensors files with strict
key checks (``weights.load_strict``). No weights are downloaded or shipped.
"""
