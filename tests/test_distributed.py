"""DDP on CPU (gloo, 2 processes via torchrun) matches one process with the same global batch, and resumes.

One reference run in this process and two torchrun launches: the first trains MAE (ViT-tiny/8, 32 px,
global batch 8) and is killed (one rank exits abruptly) after 2 of 4 steps; the second is the same
command without the kill: it resumes MAE from the checkpoint, then runs DINO and the centre check.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist

from sarssl.train.ddp_check import compare_runs, launch, read_losses, run_check

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ref = tmp_path_factory.mktemp("single")
    ddp = tmp_path_factory.mktemp("ddp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same per-process threading as the torchrun workers; no oversubscription
    try:
        for method in ("mae", "dino", "center"):
            run_check(method, ref)
    finally:
        torch.set_num_threads(threads)
    killed = launch(["--out", str(ddp), "--method", "mae", "--crash-after", "2"], check=False)
    resumed = launch(["--out", str(ddp), "--method", "mae", "dino", "center"])
    return ref, ddp, killed, resumed


def test_mae_ddp_matches_single_process(runs):
    ref, ddp, _, _ = runs
    cmp = compare_runs(ref, ddp, "mae")
    assert cmp["steps"] == 4 and cmp["final_step"] == 4
    assert cmp["max_loss_diff"] < 1e-4, cmp
    assert cmp["max_param_diff"] < 1e-4, cmp
    # and the losses move: the comparison is not between two untrained models
    assert cmp["losses_reference"][0] != cmp["losses_reference"][-1]


def test_mae_ranks_see_disjoint_halves_of_the_global_batch(runs):
    ref, ddp, _, _ = runs
    single = json.loads((ref / "mae" / "shards" / "rank0.json").read_text())["samples"]
    r0 = json.loads((ddp / "mae" / "shards" / "rank0.json").read_text())
    r1 = json.loads((ddp / "mae" / "shards" / "rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    assert len(r0["samples"]) == len(r1["samples"]) == len(single) // 2
    assert not set(r0["samples"]) & set(r1["samples"])
    assert sorted(r0["samples"] + r1["samples"]) == sorted(single)


def test_ddp_resumes_after_a_kill(runs):
    _, ddp, killed, resumed = runs
    assert killed.returncode != 0, "the first launch should have been killed"
    assert "simulated crash at step 2" in killed.stdout + killed.stderr
    attempts = [json.loads(line) for line in (ddp / "mae" / "losses.jsonl").read_text().splitlines()]
    assert {a["step"] for a in attempts[:2]} == {0, 1}  # steps 0-1 come from the killed launch
    assert sorted(read_losses(ddp / "mae")) == [0, 1, 2, 3]
    result = json.loads((ddp / "mae" / "result.json").read_text())
    assert result["world_size"] == 2 and result["per_rank_batch"] == 4
    ckpt = torch.load(ddp / "mae" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 4 and ckpt["world_size"] == 2
    # only rank 0 writes the run files
    assert (ddp / "mae" / "encoder.pth").is_file() and (ddp / "mae" / "metrics.csv").is_file()


def test_dino_ddp_matches_single_process_including_centre(runs):
    ref, ddp, _, _ = runs
    cmp = compare_runs(ref, ddp, "dino")
    assert cmp["final_step"] == 4
    assert cmp["max_loss_diff"] < 1e-4, cmp
    assert cmp["max_center_diff"] < 1e-4, cmp
    assert cmp["max_param_diff"] < 1e-3, cmp


def test_dino_centre_all_reduce_equals_single_process_centre(runs):
    ref, ddp, _, _ = runs
    assert compare_runs(ref, ddp, "center")["max_center_diff"] < 1e-6
    # a centre from one rank's half alone differs: the all-reduce is what makes them equal
    from sarssl.models.dino import DINOLoss

    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 8, 64, generator=g) * 3 + torch.linspace(-2, 2, 64)
    half = DINOLoss(64)
    half.center.copy_(torch.randn(1, 64, generator=g))
    half.update_center(teacher[:, 0::2].reshape(-1, 64))
    assert float((half.center - torch.load(ddp / "center" / "center.pt")).abs().max()) > 1e-3
