"""Real-world extractors (InceptionV3, I3D, SyncNet): architecture, strict loading, API path.

Random-init networks of the real architectures (small inputs where the architecture allows)
run through the same metric code the synthetic world uses.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fada_rt.clips import Clip
from fada_rt.metrics.extractors.i3d import I3D, I3DConfig, I3DFeatures, same_pad
from fada_rt.metrics.extractors.inception import InceptionConfig, InceptionFeatures, InceptionV3
from fada_rt.metrics.extractors.syncnet import SyncNet, SyncNetEmbedder
from fada_rt.metrics.extractors.weights import load_strict
from fada_rt.metrics.fvd import fvd
from fada_rt.metrics.suite import Extractors, evaluate_clips
from fada_rt.metrics.sync import sync_score
from train.synthetic.dataset import make_clip


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small convolutions run faster on one thread, and far faster on a shared, busy CPU."""
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])


def _seeded(cls, *args):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return cls(*args).eval()


@pytest.fixture(scope="module")
def clips():
    made = [make_clip(seed=5, index=i, min_seconds=1.28, max_seconds=1.28, size=32) for i in range(2)]
    return [Clip(id=c.id, frames=c.frames, audio=c.audio, fps=25) for c in made]


def test_architecture_sizes():
    inception = InceptionV3()
    assert sum(p.numel() for p in inception.parameters()) == pytest.approx(21.8e6, rel=0.02)  # paper: ~22M (no classifier)
    i3d = I3D()
    assert sum(p.numel() for p in i3d.parameters()) == pytest.approx(12.7e6, rel=0.05)  # Inception-v1 inflated, 400 classes
    with torch.no_grad():
        assert inception(torch.zeros(1, 3, 299, 299)).shape == (1, 2048)
        x = torch.zeros(1, 5, 111, 111)
        sync = SyncNet().eval()
        assert sync.video(x).shape == (1, 256) and sync.audio(torch.zeros(1, 1, 13, 20)).shape == (1, 256)


def test_same_padding_matches_tensorflow_rule():
    x = torch.zeros(1, 1, 16, 15, 224)
    y = same_pad(x, (7, 7, 7), (2, 2, 2))
    # TF SAME: out = ceil(in / s); total pad = (out - 1) s + k - in, the extra pixel after.
    assert y.shape[2:] == (16 + 5, 15 + 6, 224 + 5)


def test_strict_loading_round_trip_and_errors(tmp_path):
    net = _seeded(SyncNet)
    path = tmp_path / "syncnet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    emb = SyncNetEmbedder.from_file(path)
    for a, b in zip(emb.net.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state.pop("audio.fc7.bias")
    save_file(state | {"extra.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"1 missing keys.*1 unexpected"):
        load_strict(SyncNet(), tmp_path / "bad.safetensors", what="SyncNet")
    with pytest.raises(FileNotFoundError):
        load_strict(SyncNet(), tmp_path / "none.safetensors", what="SyncNet")
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="safetensors"):
        load_strict(SyncNet(), tmp_path / "w.pt", what="SyncNet")
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["audio.fc7.bias"] = torch.zeros(3)
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ValueError, match="shapes differ"):
        load_strict(SyncNet(), tmp_path / "shape.safetensors", what="SyncNet")


def test_real_world_extractors_run_through_the_metric_api(clips, tmp_path):
    inception = InceptionFeatures(_seeded(InceptionV3), InceptionConfig(input_size=75))
    i3d = I3DFeatures(_seeded(I3D), I3DConfig(input_size=32))
    path = tmp_path / "i3d.safetensors"
    save_file({k: v.contiguous() for k, v in i3d.net.state_dict().items()}, str(path))
    loaded = I3DFeatures.from_file(path, I3DConfig(input_size=32))
    syncnet = SyncNetEmbedder(_seeded(SyncNet))
    frames = [c.frames for c in clips]

    feats = inception(frames[0][:4])
    assert feats.shape == (4, 2048) and np.isfinite(feats).all()
    windows = np.stack([frames[0][:16], frames[1][:16]])
    np.testing.assert_allclose(loaded(windows), i3d(windows), rtol=1e-5, atol=1e-6)
    assert i3d(windows).shape == (2, 400)
    assert fvd(frames, frames, extractor=i3d, stride=16) == pytest.approx(0.0, abs=1e-6)

    # The whole per-clip + distribution path with the real-world networks swapped in.
    ex = Extractors(frame=inception, clip=i3d, sync=syncnet, mouth=None)
    result = evaluate_clips(clips[:1], clips[:1], extractors=ex, progress=False, max_offset=8, fvd_stride=16)
    s = result["summary"]
    assert s["clips"] == 1 and "mouth_mae" not in s
    assert s["fid"] == pytest.approx(0.0, abs=1e-6) and s["fvd"] == pytest.approx(0.0, abs=1e-6)
    row = result["per_clip"][0]
    assert -8 <= row["sync_offset"] <= 8 and row["sync_distance"] > 0 and row["sync_confidence"] >= 0
    assert row["sync_offset"] == row["ref_sync_offset"]  # same clip, same network: same answer
    v, a = syncnet.embed(clips[1].frames, clips[1].audio)
    assert v.shape == a.shape == (32, 256) and np.isfinite(v).all() and np.isfinite(a).all()
    assert sync_score(v, a, max_offset=8).distances.shape == (17,)
