"""benchmarks.quality_table: a row per method from real (tiny, random-init) runs, and the W-by-kind summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_tiny_model, randomize_zero_init

from benchmarks.quality_table import (
    Method,
    evaluate_method,
    ground_truth_row,
    load_refs,
    merge_rows,
    merge_weights,
    to_markdown,
    weight_by_kind,
)
from fada_rt.checkpoint import save_model
from fada_rt.metrics.suite import Extractors, mean_over_seeds, seed_list
from train.synthetic.dataset import generate_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("quality")
    generate_dataset(out=root / "heldout", clips=3, size=64, tier="A", seed=11, min_seconds=1.8, max_seconds=2.0,
                     progress=False)
    teacher = make_tiny_model(seed=1)
    randomize_zero_init(teacher)
    save_model(teacher, root / "runs" / "teacher-tiny" / "teacher", role="teacher", info={"step": 10})
    save_model(teacher.make_student("layer_tokens"), root / "runs" / "distill" / "fast" / "student", role="student",
               info={"step": 5})
    refs = load_refs(root / "heldout", clips=2, manifest="A", max_frames=40)
    return root, refs, Extractors.synthetic()


def test_rows_have_the_table_keys(setup) -> None:
    root, refs, ex = setup
    fast = evaluate_method(Method("4", "CFG layer + tokens (fast)", "distill/fast", "student", "fast"),
                           runs=root / "runs", refs=refs, extractors=ex, seed=0, video_dir=root / "videos")
    teacher6 = evaluate_method(Method("2", "Teacher, DDIM 6 x 1 (cond.)", "teacher-tiny", "teacher", "teacher-6x1"),
                               runs=root / "runs", refs=refs, extractors=ex, seed=0, video_dir=None)
    gt = ground_truth_row(refs, ex)
    for row in (fast, teacher6, gt):
        assert {"method", "nfe", "sync_distance", "sync_confidence", "fid", "fvd"} <= set(row)
        json.dumps(row)
    assert (fast["nfe"], teacher6["nfe"], fast["train_step"]) == (6, 6, 5)
    assert fast["fid"] > gt["fid"] == 0.0  # an untrained student is far from the ground truth
    assert gt["mouth_open_corr"] > 0.9  # ground-truth mouths follow their audio (an untrained one does not)
    assert not fast.get("mouth_open_corr", 0.0) > 0.5
    assert len(list((root / "videos").rglob("*.mp4"))) == 2
    md = to_markdown([gt, teacher6, fast], [], header="## test")
    assert "| CFG layer + tokens (fast) | 6 |" in md and "| Ground truth | 0 |" in md and "| width r ↑ |" in md


def test_weight_by_kind_from_samples(tmp_path: Path) -> None:
    run = tmp_path / "distill" / "balanced"
    run.mkdir(parents=True)
    lines = ["step,clip,tier,kind,window,t,cfg_a,cfg_r,l_distill,l_gt,ratio,weight"]
    lines += [f"1,c{i},B,desynced,1,0.1,1,1,0.01,5,500,0" for i in range(3)]
    lines += ["1,c9,B,desynced,1,0.1,1,1,0.1,2,20,0.42", "1,c7,A,clean,1,0.1,1,1,0.1,0.5,5,0.3"]
    (run / "samples.csv").write_text("\n".join(lines) + "\n")
    kinds = {k["kind"]: k for k in weight_by_kind(tmp_path)}
    assert kinds["desynced"]["weight_zero_share"] == 0.75 and kinds["desynced"]["samples"] == 4
    assert kinds["clean"]["weight_zero_share"] == 0.0


def test_merge_orders_methods_and_later_rows_win() -> None:
    def row(name: str, fvd: float, clips: int = 16) -> dict:
        return {"method": name, "nfe": 6, "fvd": fvd, "clips": clips}

    first = [row("Ground truth", 0.0), row("CFG layer + tokens (fast)", 9.0), row("Stu. B, Fixed-0", 5.0)]
    second = [row("Ground truth", 0.0), row("Teacher, DDIM 25 x 3 (A)", 1.0), row("CFG layer + tokens (fast)", 7.0)]
    merged = merge_rows([first, second])
    assert [r["method"] for r in merged] == ["Ground truth", "Teacher, DDIM 25 x 3 (A)", "Stu. B, Fixed-0",
                                              "CFG layer + tokens (fast)"]
    assert merged[-1]["fvd"] == 7.0
    with pytest.raises(ValueError, match="different numbers of clips"):
        merge_rows([first, [row("Stu. B, Fixed-0.2", 1.0, clips=8)]])
    with pytest.raises(ValueError, match="unknown methods"):
        merge_rows([[row("Made-up", 1.0)]])


def test_merge_weights_keeps_the_rows_of_runs_not_at_hand() -> None:
    def row(run: str, kind: str, mean: float) -> dict:
        return {"run": run, "kind": kind, "samples": 4, "weight_zero_share": 0.0, "weight_mean": mean,
                "ratio_median": 5.0}

    saved = [row("distill/fast", "clean", 0.2), row("distill/fast", "frozen", 0.3), row("distill/balanced", "clean", 0.5)]
    here = [row("distill/fast", "clean", 0.9)]  # recomputed: replaces both of the saved rows of distill/fast
    merged = merge_weights([saved, here])
    assert [(r["run"], r["kind"], r["weight_mean"]) for r in merged] == [("distill/balanced", "clean", 0.5),
                                                                          ("distill/fast", "clean", 0.9)]
    with pytest.raises(ValueError, match="unknown runs"):
        merge_weights([[row("elsewhere/x", "clean", 0.1)]])


def test_guidance_sweep_rows_and_segments(setup) -> None:
    from benchmarks.guidance_sweep import parse_scales, segment, sweep

    root, refs, _ = setup
    rows = sweep(checkpoint=root / "runs" / "teacher-tiny" / "teacher", sampler="teacher-6x3",
                 scales=parse_scales(["1,1", "4,2"]), refs=refs, segment_frames=26)
    assert [r["cfg"] for r in rows] == [[1.0, 1.0], [4.0, 2.0]] and rows[0]["nfe"] == 18
    for row in rows:
        assert set(row["all"]) == set(row["first"]) == set(row["last"])
        json.dumps(row)
    assert rows[0]["all"]["fvd"] != rows[1]["all"]["fvd"]  # the scales reach the sampler
    first, last = segment(refs, "first", 26), segment(refs, "last", 26)
    t = refs[0].num_frames
    assert (first[0].frames == refs[0].frames[:26]).all() and (last[0].frames == refs[0].frames[t - 26:]).all()
    assert len(last[0].audio) == 26 * 640 and (last[0].audio == refs[0].audio[(t - 26) * 640 : t * 640]).all()
    with pytest.raises(ValueError, match="fewer than --segment"):
        segment(refs, "first", 1000)
    with pytest.raises(ValueError, match="CFG_A,CFG_R pairs"):
        parse_scales(["6.5"])


def test_mean_over_seeds_known_values() -> None:
    nan = float("nan")
    out = mean_over_seeds([{"a": 1.0, "b": nan, "c": nan}, {"a": 2.0, "b": 4.0, "c": nan}], ["a", "b", "c", "d"])
    assert out["a"] == 1.5 and out["b"] == 4.0  # a nan seed is left out of the mean
    assert all(v != v for v in (out["c"], out["d"]))  # nan (or absent) in every seed stays nan
    with pytest.raises(ValueError, match="at least one seed"):
        mean_over_seeds([], ["a"])
    assert seed_list(3) == [3] and seed_list((0, 1)) == [0, 1]
    with pytest.raises(ValueError, match="at least one noise seed"):
        seed_list([])


def test_rows_average_over_seeds(setup) -> None:
    root, refs, ex = setup
    method = Method("2", "Teacher, DDIM 6 x 1 (cond.)", "teacher-tiny", "teacher", "teacher-6x1")
    rows = [evaluate_method(method, runs=root / "runs", refs=refs, extractors=ex, seed=s, video_dir=None)
            for s in (0, 1, [0, 1])]
    one, two, both = rows
    assert both["seeds"] == [0, 1] and one["seeds"] == [0]
    assert one["sync_distance"] != two["sync_distance"]  # the seed reaches the noise
    for key in ("sync_distance", "fvd", "jitter"):
        assert both[key] == pytest.approx((one[key] + two[key]) / 2, rel=1e-9)
    assert both["sync_distance_seeds"] == pytest.approx([one["sync_distance"], two["sync_distance"]])
    half = abs(one["sync_distance"] - two["sync_distance"]) / 2
    md = to_markdown([both, one], [], header="## test")
    assert f"{both['sync_distance']:.4f} ±{half:.4f} |" in md  # the averaged row shows its spread
    assert f"| {one['sync_distance']:.4f} |" in md  # a one-seed row does not


def test_guidance_sweep_averages_seeds(setup) -> None:
    from benchmarks.guidance_sweep import sweep

    root, refs, _ = setup
    kw = dict(checkpoint=root / "runs" / "distill" / "fast" / "student", sampler="fast", scales=[(2.0, 1.0)],
              refs=refs, segment_frames=26)
    (one,), (both,) = sweep(**kw, seed=1), sweep(**kw, seed=[0, 1])
    assert both["seeds"] == [0, 1] and len(both["all_seeds"]["sync_distance"]) == 2
    assert both["all_seeds"]["fvd"][1] == pytest.approx(one["all"]["fvd"], rel=1e-9)
    for part in ("all", "first", "last"):
        assert both[part]["sync_distance"] != one[part]["sync_distance"]
    assert both["all"]["fvd"] == pytest.approx(sum(both["all_seeds"]["fvd"]) / 2, rel=1e-9)
