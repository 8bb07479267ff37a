"""The adaptive ground-truth weight W(R) of mixed supervision (paper Eq. 7–8, docs/design.md §3.5)."""

from __future__ import annotations

import pytest
import torch

from fada_rt.sampling import RATIO_EPS, GTWeightConfig, gt_weight, loss_ratio, mixed_supervision_loss

R = torch.tensor([1.0, 29.9, 30.0, 65.0, 99.9, 100.0, 1000.0], dtype=torch.float64)


def test_adaptive_weight_values():
    w = gt_weight(R, GTWeightConfig())  # s = 0.25, W0 = 0.2, R_p = 30, R_d = 100
    # 0.2 R^0.25 below R_p; 0.2 * 30^0.25 * (100 - R) / 70 from R_p; 0 from R_d
    expected = [0.2, 0.467679, 0.468069, 0.234035, 0.000669, 0.0, 0.0]
    assert w.tolist() == pytest.approx(expected, abs=1e-6)


def test_adaptive_weight_continuous_at_peak_and_zero_from_dead():
    cfg = GTWeightConfig()
    below, at = gt_weight(torch.tensor([30.0 - 1e-9, 30.0], dtype=torch.float64), cfg).tolist()
    assert below == pytest.approx(at, abs=1e-9)  # continuous at R_p
    near_dead = gt_weight(torch.tensor([100.0 - 1e-9], dtype=torch.float64), cfg).item()
    assert 0 < near_dead < 1e-9  # continuous at R_d, and exactly 0 from R_d on
    assert gt_weight(torch.tensor([100.0, 1e6]), cfg).tolist() == [0.0, 0.0]


def test_fixed_and_unlimited_variants():
    for w0 in (0.0, 0.2, 1.0):  # Table 3's Fixed-x
        assert gt_weight(R, GTWeightConfig(mode="fixed", w0=w0)).tolist() == [w0] * len(R)
    unlimited = gt_weight(R, GTWeightConfig(mode="unlimited"))  # no peak / dead thresholds
    assert unlimited[-1].item() == pytest.approx(0.2 * 1000**0.25, rel=1e-12)  # 1.1247 at R = 1000
    assert unlimited[3].item() == pytest.approx(0.567882, abs=1e-6)  # 0.2 * 65^0.25, rising past R_p
    assert bool((unlimited[1:] > unlimited[:-1]).all())


def test_no_gradient_flows_through_the_weight():
    l_distill = torch.tensor([0.01, 0.02, 0.5], requires_grad=True)
    l_gt = torch.tensor([0.05, 1.0, 0.1], requires_grad=True)
    loss = mixed_supervision_loss(l_distill=l_distill, l_gt=l_gt, config=GTWeightConfig())
    assert not loss.weight.requires_grad and not loss.ratio.requires_grad
    torch.testing.assert_close(loss.ratio, torch.tensor([5.0, 50.0, 0.2]))
    loss.total.backward()
    # d total / d L_distill = 1/B and d total / d L_GT = W/B exactly: W is a constant
    torch.testing.assert_close(l_distill.grad, torch.full((3,), 1 / 3))
    torch.testing.assert_close(l_gt.grad, loss.weight / 3)
    expected_total = (l_distill + loss.weight * l_gt).mean()
    torch.testing.assert_close(loss.total, expected_total)


def test_ratio_guard_and_bad_inputs():
    r = loss_ratio(torch.tensor([1e-3, 0.0]), torch.tensor([0.0, 0.0]))
    assert r[0].item() == pytest.approx(1e-3 / RATIO_EPS) and r[1].item() == 0.0  # finite, no nan
    assert gt_weight(r, GTWeightConfig()).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="must match"):
        loss_ratio(torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match=">= 0"):
        gt_weight(torch.tensor([-1.0]), GTWeightConfig())
    with pytest.raises(ValueError, match="mode"):
        GTWeightConfig(mode="linear")
    with pytest.raises(ValueError, match="r_peak"):
        GTWeightConfig(r_peak=100.0, r_dead=30.0)
