"""The estimator: real Wan configs on the meta device, and its arithmetic against a measured tiny run."""

import json

import pytest
import torch

from apt.cli.estimate import main
from apt.planning.check import compare
from apt.planning.estimate import WAN_MODELS, Setup, build_on_meta, estimate, param_counts


@pytest.mark.parametrize("name,blocks,billions", [("wan2.1-1.3b", 30, 1.419), ("wan2.1-14b", 40, 14.288),
                                                  ("wan2.2-ti2v-5b", 30, 5.000)])
def test_wan_configs_build_on_meta_with_the_right_depth(name, blocks, billions):
    model = build_on_meta(WAN_MODELS[name])
    assert len(model.blocks) == blocks
    assert all(p.device.type == "meta" for p in model.parameters())
    counts = param_counts(WAN_MODELS[name])
    assert counts["total"] / 1e9 == pytest.approx(billions, abs=1e-3)
    assert counts["taps"] == {30: (13, 22, 30), 40: (18, 29, 40)}[blocks]


def test_estimate_matches_a_measured_tiny_run():
    """Parameter, gradient and optimiser bytes exactly; kept activations of the G step, the D step
    and one recomputed block within 5% (the estimator leaves out a few per-sample scalars);
    forward FLOPs within 0.1%."""
    rows = {name: ratio for name, _, _, ratio in compare()}
    for key in ("g_params", "ema_params", "d_params", "g_grads", "d_grads", "g_optimizer", "d_optimizer"):
        assert rows[key] == 1.0, key
    for key in ("act_g_step", "act_d_step", "act_block"):
        assert 0.95 <= rows[key] <= 1.05, (key, rows[key])
    for key in ("g_forward_flops", "d_forward_flops"):
        assert rows[key] == pytest.approx(1.0, abs=1e-3), key


def test_sharded_states_scale_with_gpus_and_activations_with_micro_batch():
    one = estimate(Setup(model=WAN_MODELS["wan2.1-1.3b"], gpus=8, micro_batch=1))
    two = estimate(Setup(model=WAN_MODELS["wan2.1-1.3b"], gpus=16, micro_batch=2, batch=2048))
    assert one["tokens"] == 13 * 45 * 80
    assert two["memory"]["G params (fp32, sharded)"] * 2 == one["memory"]["G params (fp32, sharded)"]
    assert two["activations"]["d_step"] == 2 * one["activations"]["d_step"]
    assert two["grad_accum"] == 64 and two["flops"]["per_step"] == 2048 * one["flops"]["per_sample"]


def test_cli_prints_a_table_and_json(capsys):
    main(["--model", "wan2.1-1.3b", "--gpus", "64", "--micro-batch", "1", "--frames", "49", "--height", "720",
          "--width", "1280"])
    table = capsys.readouterr().out
    assert "46,800 tokens" in table and "activations, peak" in table and "PFLOP/step" in table
    main(["--model", "wan2.1-14b", "--gpus", "1024", "--batch", "2048", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["blocks"] == 40 and out["grad_accum"] == 2 and out["total_bytes"] > 0
    assert torch.tensor(list(out["memory_bytes"].values())).gt(0).all()


def test_reward_pass_adds_the_decode_to_flops_and_a_g_step_phase():
    base = Setup(model=WAN_MODELS["wan2.1-1.3b"], gpus=64, frames=49, height=480, width=832)
    plain = estimate(base)
    one = estimate(Setup(**{**base.__dict__, "reward_latent_frames": 1}))
    two = estimate(Setup(**{**base.__dict__, "reward_latent_frames": 2}))
    assert plain["reward"] is None and "g_step_reward" not in plain["activations"]
    assert 0 < one["reward"]["forward_flops"] < two["reward"]["forward_flops"]
    # the second latent frame decodes 4 pixel frames: about 3-4 times the first one's work and memory
    extra = two["reward"]["forward_flops"] - one["reward"]["forward_flops"]
    assert 2.5 < extra / one["reward"]["forward_flops"] < 4.5
    assert two["reward"]["later_frame_bytes"] > 2 * two["reward"]["first_frame_bytes"]
    assert one["flops"]["per_sample"] == plain["flops"]["per_sample"] + 4 * one["reward"]["forward_flops"]
    assert one["activations"]["g_step_reward"] > 0


def test_wan22_ti2v_5b_plans_at_its_native_size_with_its_own_vae(capsys):
    """Wan 2.2 TI2V-5B: 16x VAE with 48 latent channels, 1280x704 by default (720 is refused: tokens are 32
    pixels a side); the reward pass decodes through Wan 2.2's patchified VAE."""
    out = main(["--model", "wan2.2-ti2v-5b", "--gpus", "256", "--batch", "2048", "--reward-latent-frames", "1"])
    assert out["latent"] == (48, 13, 44, 80) and out["tokens"] == 13 * 22 * 40
    assert "11,440 tokens" in capsys.readouterr().out and out["reward"]["forward_flops"] > 0
    with pytest.raises(SystemExit) as exit_status:
        main(["--model", "wan2.2-ti2v-5b", "--height", "720"])
    assert exit_status.value.code == 2
    assert "height 720 is not a multiple of 32" in capsys.readouterr().err
    assert main(["--model", "wan2.1-1.3b"])["tokens"] == 13 * 45 * 80  # 720 stays Wan 2.1's native height


def test_context_parallel_splits_the_activations_not_the_states():
    one = estimate(Setup(model=WAN_MODELS["wan2.1-14b"], gpus=8, batch=256))
    eight = estimate(Setup(model=WAN_MODELS["wan2.1-14b"], gpus=8, batch=256, context_parallel=8))
    states = [k for k in one["memory"] if "sharded" in k]
    assert all(one["memory"][k] == eight["memory"][k] for k in states)
    for phase in ("d_step", "g_step", "recompute_block"):  # the latent and text stay whole on every GPU
        assert one["activations"][phase] / 8 < eight["activations"][phase] < one["activations"][phase] / 7.5, phase
    assert eight["grad_accum"] == 256 and eight["flops"]["per_step"] == one["flops"]["per_step"]
    with pytest.raises(ValueError, match="must divide the 40 attention heads"):
        estimate(Setup(model=WAN_MODELS["wan2.1-14b"], gpus=24, context_parallel=3))


def test_the_planner_says_a_plan_does_not_fit_and_proposes_one(capsys):
    """The paper's video stage (14B, 720p x 49, batch 2048) on 64 H100s: 80.9 GiB without context
    parallelism; the planner's proposal splits the tokens and fits in <= 72 GiB (80 less 10% headroom)."""
    out = main(["--model", "wan2.1-14b", "--gpus", "64", "--batch", "2048", "--gpu-memory", "80"])
    text = capsys.readouterr().out
    assert not out["fit"]["fits"] and "fits 80 GiB GPUs with 10% headroom: NO" in text
    proposal = out["fit"]["proposal"]
    assert proposal["context_parallel"] > 1 and proposal["total_gib"] <= 72
    assert f"a plan that fits: {proposal['flags']}" in text and "days for 300 updates" in text
    flags = proposal["flags"].split()
    again = main(["--model", "wan2.1-14b", "--gpus", "64", "--gpu-memory", "80", *flags])
    assert again["fit"]["fits"] and again["total_bytes"] / 2**30 == pytest.approx(proposal["total_gib"])
    with pytest.raises(SystemExit) as exit_status:
        main(["--model", "wan2.1-14b", "--gpus", "24", "--cp", "3"])
    assert exit_status.value.code == 2 and "attention heads" in capsys.readouterr().err


@pytest.mark.slow
def test_estimate_matches_a_measured_context_parallel_run():
    """Two CPU ranks splitting the tiny run's tokens: rank 0's kept activations within 5% of the estimate."""
    from apt.planning.check import compare_context_parallel

    rows = {name: ratio for name, _, _, ratio in compare_context_parallel(2)}
    for key in ("act_g_step", "act_d_step", "act_block"):
        assert 0.95 <= rows[key] <= 1.05, (key, rows[key])


def test_lora_drops_the_generators_gradients_and_optimiser_state():
    full = estimate(Setup(model=WAN_MODELS["wan2.1-14b"], gpus=8, batch=256, context_parallel=8))
    lora = estimate(Setup(model=WAN_MODELS["wan2.1-14b"], gpus=8, batch=256, context_parallel=8, lora_rank=64))
    adapter = 64 * lora["counts"]["lora_per_rank"]
    # 40 blocks x (8 attention projections of 5120 -> 5120 and the FFN's 5120 <-> 13824) per rank
    assert lora["counts"]["lora_per_rank"] == 40 * (8 * (5120 + 5120) + 2 * (5120 + 13824))
    assert lora["memory"]["G grads (fp32, sharded)"] == 4 * adapter / 8
    assert lora["memory"]["G Adam exp_avg + exp_avg_sq (fp32, sharded)"] == 2 * 4 * adapter / 8
    assert full["total_bytes"] - lora["total_bytes"] > 19 * 2**30  # 14B's gradients and Adam states, / 8
    # frozen base weights: G's backward computes input gradients only
    assert lora["flops"]["per_sample"] == full["flops"]["per_sample"] - full["flops"]["g_forward"]


def test_the_papers_14b_plan_on_one_node_does_not_fit_and_a_lora_plan_does(capsys):
    out = main(["--model", "wan2.1-14b", "--gpus", "8", "--batch", "2048", "--gpu-memory", "80"])
    text = capsys.readouterr().out
    assert not out["fit"]["fits"] and "NO (134.8 of 72.0 GiB)" in text
    proposal = out["fit"]["proposal"]
    assert proposal["lora_rank"] == 64 and proposal["context_parallel"] > 1 and proposal["total_gib"] <= 72
    assert "--lora 64" in proposal["flags"] and "a plan that fits" in text
    # no adapter is proposed where the full weights fit
    small = main(["--model", "wan2.1-1.3b", "--gpus", "8", "--batch", "256", "--gpu-memory", "80"])
    assert small["fit"]["fits"] and small["fit"]["proposal"]["lora_rank"] == 0
