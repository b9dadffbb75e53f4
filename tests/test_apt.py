"""Stage 2: config, collapse guard, gradient flow, and 2-process torchrun resume."""

from pathlib import Path

import pytest
import torch
from tiny import run_training_script, straight_and_resumed_runs, tiny_transformer

from apt.adversarial import losses
from apt.adversarial.config import APTConfig
from apt.adversarial.guards import CollapseGuard, TrainingCollapsed
from apt.adversarial.stage import AdversarialPostTraining
from apt.core.config import ConfigError, load_config
from apt.models.backbone import WanBackbone
from apt.models.generator import OneStepGenerator
from apt.training.run_folder import read_metrics
from discriminator.model import Discriminator

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs/toy/apt.yaml"


def test_config_needs_a_generator_and_a_known_loss():
    assert load_config(APTConfig, TOY).adv.r1_weight == 100.0
    with pytest.raises(ConfigError, match="generator_init"):
        load_config(APTConfig, TOY, ["adv.generator_init="])
    with pytest.raises(ConfigError, match="adv.loss"):
        load_config(APTConfig, TOY, ["adv.loss=hinge"])
    with pytest.raises(ConfigError, match="adv.r2_weight"):
        load_config(APTConfig, TOY, ["adv.r2_weight=-1"])
    with pytest.raises(ConfigError, match="adv.lr_heads"):
        load_config(APTConfig, TOY, ["adv.lr_heads=-1"])
    with pytest.raises(ConfigError, match="adv.feature_matching_weight"):
        load_config(APTConfig, TOY, ["adv.feature_matching_weight=-0.5"])
    for key in ("mismatch_weight", "reencode_latent_frames"):  # options measured as not helping: removed
        with pytest.raises(ConfigError, match=f"adv.{key}"):
            load_config(APTConfig, TOY, [f"adv.{key}=1"])
    for bad in ("adv.distill_weight=-1", "adv.distill_guidance_scale=-1", "adv.distill_shift=0"):
        with pytest.raises(ConfigError, match="adv.distill"):
            load_config(APTConfig, TOY, [bad])
    for key in ("distill_every", "distill_steps", "feature_matching_every"):
        with pytest.raises(ConfigError, match=f"adv.{key} must be >= 1"):
            load_config(APTConfig, TOY, [f"adv.{key}=0"])


def test_collapse_guard_stops_on_a_discriminator_that_wins_outright():
    guard = CollapseGuard(collapse_d_loss=1e-3, patience=3)
    for step in range(2):
        guard.after_sync(step, {"d_loss": 1e-5, "g_loss": 9.0, "d_auc": 0.5})
    guard.after_sync(2, {"d_loss": 0.5, "g_loss": 1.0, "d_auc": 0.5})  # a healthy step resets the count
    for step in range(2):
        guard.after_sync(step, {"d_loss": 1e-5, "g_loss": 9.0, "d_auc": 0.5})
    with pytest.raises(TrainingCollapsed, match="below 0.001 for 3 steps"):
        guard.after_sync(5, {"d_loss": 1e-5, "g_loss": 9.0, "d_auc": 0.5})


def test_stop_rule_for_samples_that_left_the_data():
    """adv.stop_d_auc: D separating G's samples from real clips for collapse_patience steps stops the run."""
    healthy = {"d_loss": 1.3, "g_loss": 0.7}
    off = CollapseGuard(1e-3, patience=2)
    for step in range(5):
        off.after_sync(step, {**healthy, "d_auc": 0.999})  # off by default
    guard = CollapseGuard(1e-3, patience=2, stop_d_auc=0.95)
    guard.after_sync(0, {**healthy, "d_auc": 0.99})
    guard.after_sync(1, {**healthy, "d_auc": 0.80})  # a step back under the threshold resets the count
    guard.after_sync(2, {**healthy, "d_auc": 0.99})
    with pytest.raises(TrainingCollapsed, match="left the data"):
        guard.after_sync(3, {**healthy, "d_auc": 0.99})


def test_the_stage_hands_the_trainer_its_ema_and_its_guard():
    """EMA and collapse guard are trainer callbacks, configured from adv (apt/training/callbacks.py)."""
    from apt.training.distributed import DistInfo
    from apt.training.ema import EMAUpdate

    cfg = load_config(APTConfig, TOY, ["parallel.fsdp=false", "adv.collapse_patience=7", "adv.stop_d_auc=0.9",
                                       "adv.ema_decay=0.5"])
    stage = AdversarialPostTraining(cfg, DistInfo(0, 1, 0, torch.device("cpu"), "gloo"), WanBackbone(tiny_transformer()),
                                    WanBackbone(tiny_transformer(seed=1)), previews=None)
    ema, guard = stage.callbacks()
    assert isinstance(ema, EMAUpdate) and ema.decay == 0.5 and ema.ema is stage.ema
    assert (guard.patience, guard.stop_d_auc) == (7, 0.9)


def test_generator_loss_reaches_every_generator_parameter():
    g = OneStepGenerator(WanBackbone(tiny_transformer(seed=1)))
    d = Discriminator.from_teacher(WanBackbone(tiny_transformer()))
    z, text = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 5, 16)
    losses.g_loss(d(g(z, text), text, shift_s=12.0)).backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_both_stages_train_on_wan22_ti2v_5b_layout(tmp_path):
    """Stage 1 then stage 2 on a tiny random folder of Wan 2.2 TI2V-5B's layout (patchified 16x VAE,
    per-token timesteps), toy clips encoded by its VAE; previews decode through it."""
    import math
    import os
    import subprocess
    import sys

    from tiny import build_tiny_wan_folder

    model = build_tiny_wan_folder(tmp_path / "ti2v", wan22="ti2v-5b")
    env = dict(os.environ, OMP_NUM_THREADS="1", APT_CACHE_DIR=str(tmp_path / "cache"))
    common = [f"model.path={model}", "data.num_clips=8", "train.micro_batch_size=4", "train.global_batch_size=0",
              "train.steps=2", "train.sample_every=2", "preview.prompts=[a red three moving left]",
              "train.tensorboard=false"]
    for script, config, extra in (("train_distill.py", "distill.yaml", []),
                                  ("train_apt.py", "apt.yaml", [f"adv.generator_init={tmp_path / 'cd'}"])):
        out_dir = tmp_path / ("cd" if script == "train_distill.py" else "apt")
        res = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--config",
                              str(ROOT / "configs" / "toy" / config), *common, *extra, f"train.out_dir={out_dir}"],
                             capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        rows = [r for r in read_metrics(out_dir) if "step" in r]
        assert rows[-1]["step"] == 2
        losses_logged = [r[k] for r in rows for k in ("loss", "d_loss", "g_loss") if r.get(k) is not None]
        assert losses_logged and all(math.isfinite(v) for v in losses_logged)
        assert list((out_dir / "samples" / "step_00000002").glob("*.mp4"))


def test_optional_terms_run_and_are_logged(tmp_path, tiny_model_dir):
    """APT2's relativistic loss + aR2, SeedVR2 feature matching and ADD's distillation term, all on, in a
    world of one."""
    import os
    import subprocess
    import sys

    out_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "scripts" / "train_apt.py"), "--config", str(TOY),
           f"model.path={tiny_model_dir}", "adv.generator_init=teacher", "data.num_clips=8",
           "train.micro_batch_size=4", "train.global_batch_size=0", "train.steps=2", "train.sample_every=0",
           f"train.out_dir={out_dir}",
           "adv.loss=relativistic", "adv.r2_weight=1000", "adv.feature_matching_weight=1.0", "adv.lr_heads=1e-3",
           "adv.r1_every=2", "adv.probe_every=2", "adv.optimizer=rmsprop", "adv.share_generator_pass=true",
           "adv.distill_weight=1", "adv.distill_every=2", "adv.distill_steps=2", "adv.feature_matching_every=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", APT_CACHE_DIR=str(tmp_path / "cache"))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_metrics(out_dir)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("aR2", "d_loss", "g_loss"):
        assert all(r[key] is not None and r[key] >= 0 for r in rows), key
    # lazy feature matching on G steps 1, 3, ...: G's samples are not the reals
    assert rows[0]["feature_matching"] > 0 and "feature_matching" not in rows[1]
    # lazy aR1 on every 2nd D step (steps 1, 3, ...); the caption probe on every 2nd step (2, 4, ...)
    assert rows[0]["aR1"] >= 0 and "aR1" not in rows[1]
    assert "caption_auc" not in rows[0] and 0 <= rows[1]["caption_auc"] <= 1
    for row in rows:  # the diagnostics of every step
        assert 0 <= row["d_auc"] <= 1 and row["d_margin"] == pytest.approx(row["d_real"] - row["d_fake"], abs=1e-5)
    # the lazy distillation term on G steps 1, 3, ...
    assert rows[0]["distill"] > 0 and "distill" not in rows[1]


@pytest.mark.slow
def test_image_then_video_schedule(tmp_path, tiny_model_dir):
    """The paper's schedule in config: an image phase (1-frame clips, configs/toy/apt-image.yaml), then a
    video phase whose G starts from the image phase's EMA and whose D starts again from the teacher."""
    import os
    import subprocess
    import sys

    from apt.training.checkpoint import load_model_from_checkpoint
    from apt.training.run_folder import latest_checkpoint

    env = dict(os.environ, OMP_NUM_THREADS="1", APT_CACHE_DIR=str(tmp_path / "cache"))
    common = [f"model.path={tiny_model_dir}", "data.num_clips=8", "train.micro_batch_size=4",
              "train.global_batch_size=0", "train.steps=2",
              "train.sample_every=0"]
    image, video = tmp_path / "image", tmp_path / "video"
    # a large G step and no EMA lag in the image phase, a negligible G step in the video phase: the video
    # G must then still be the image phase's EMA, far from the teacher
    phases = ((ROOT / "configs/toy/apt-image.yaml", ["adv.generator_init=teacher", f"train.out_dir={image}",
                                                     "adv.lr_generator=1e-3", "adv.ema_decay=0"]),
              (TOY, [f"adv.generator_init={image}", f"train.out_dir={video}", "adv.lr_generator=1e-12"]))
    for config, extra in phases:
        res = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_apt.py"), "--config", str(config),
                              *common, *extra], capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
    assert load_config(APTConfig, ROOT / "configs/toy/apt-image.yaml").data.frames == 1
    assert read_metrics(image)[-1]["step"] == read_metrics(video)[-1]["step"] == 2

    def loaded(path, name):
        module = WanBackbone.from_pretrained(tiny_model_dir)
        load_model_from_checkpoint(latest_checkpoint(path), name, module)
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    teacher = torch.cat([p.detach().flatten() for p in WanBackbone.from_pretrained(tiny_model_dir).parameters()])
    image_ema, video_g = loaded(image, "ema"), loaded(video, "generator")
    assert (image_ema - teacher).abs().max() > 1e-4
    assert (video_g - image_ema).abs().max() < 1e-8


def test_head_learning_rate_applies_to_the_new_layers_only():
    from apt.training.distributed import DistInfo

    teacher = WanBackbone(tiny_transformer())
    dist = DistInfo(0, 1, 0, torch.device("cpu"), "gloo")
    for lr_heads, want in ((0.0, 2e-4), (1e-5, 1e-5)):
        cfg = load_config(APTConfig, TOY, ["parallel.fsdp=false", "adv.lr_discriminator=2e-4", f"adv.lr_heads={lr_heads}"])
        stage = AdversarialPostTraining(cfg, dist, teacher, WanBackbone(tiny_transformer(seed=1)), previews=None)
        backbone_group, head_group = stage.opt_d.param_groups
        assert backbone_group["lr"] == 2e-4 and head_group["lr"] == want
        assert {id(p) for p in head_group["params"]} == {id(p) for p in stage.discriminator.head_parameters()}
        assert len(backbone_group["params"]) + len(head_group["params"]) == len(stage.d_trainable)


@pytest.mark.parametrize("kind, first_steps", [("adam", [1.0, 1.0, 1.0]), ("rmsprop", [3.16, 2.29, 1.92])])
def test_the_papers_optimiser_moves_each_weight_by_the_learning_rate_from_the_first_update(kind, first_steps):
    """Adam with beta1 0 (bias-corrected) moves a weight by lr at every step of a constant gradient;
    torch's RMSprop (no bias correction) by 1/sqrt(1 - 0.9^t) lr: 3.2x, 2.3x, 1.9x at first."""
    from apt.adversarial.stage import make_optimizer

    w = torch.nn.Parameter(torch.zeros(3))
    opt = make_optimizer(kind, [w], lr=1e-3, beta2=0.9)
    moves = []
    for _ in range(3):
        before = w.detach().clone()
        w.grad = torch.tensor([0.5, -2.0, 7.0])
        opt.step()
        moves.append((w.detach() - before).abs() / 1e-3)
    for move, want in zip(moves, first_steps):
        assert torch.allclose(move, torch.full((3,), want), rtol=5e-3)


def test_approximate_r1_every_kth_step_keeps_its_average_weight():
    """Lazy regularisation: on every k-th D step the penalty's weight is k times lambda, else 0."""
    from apt.adversarial.terms import ApproximatePenalty

    r1 = ApproximatePenalty(weight=100.0, every=4, sigma=0.1)
    weights = [r1.weight_at(step) for step in range(8)]
    assert weights == [400.0, 0, 0, 0, 400.0, 0, 0, 0] and sum(weights) / 8 == r1.weight
    with pytest.raises(ConfigError, match="adv.r1_every"):
        load_config(APTConfig, TOY, ["adv.r1_every=0"])
    with pytest.raises(ConfigError, match="adv.optimizer"):
        load_config(APTConfig, TOY, ["adv.optimizer=sgd"])


def test_distillation_pulls_samples_to_the_teachers_guided_prediction():
    """ADD's term: with a teacher whose x0 prediction is mu(c) at every x_t and t (v = (x_t - mu) / t),
    the guided target is mu(neg) + w (mu(c) - mu(neg)) and the loss is mean_b (1 - t_b) |fake_b - target|^2;
    its gradient moves the samples towards that target."""

    from apt.core import flow

    mu = {0: torch.full((2, 3, 2, 2), 1.0), 1: torch.full((2, 3, 2, 2), -1.0)}

    def teacher(x_t, t, text):  # text[:, 0, 0] picks the caption: 1 = the prompt, 0 = the negative
        target = torch.stack([mu[int(c)] for c in text[:, 0, 0]])
        return (x_t - target) / flow.per_sample(t, x_t)

    from apt.adversarial.distillation import GuidanceDistillation
    from apt.training.metrics import StepMetrics

    term = GuidanceDistillation(teacher, torch.zeros(1, 1, 1), weight=1.0, every=1, guidance_scale=3.0, shift=1.0,
                                steps=1)
    fake = torch.randn(4, 2, 3, 2, 2, requires_grad=True)
    text = torch.ones(4, 1, 1)
    m = StepMetrics()
    torch.manual_seed(0)
    loss = term.loss(fake, text, m)
    torch.manual_seed(0)
    t = flow.sample_timesteps(4, 1.0)
    want_target = mu[0] + 3 * (mu[1] - mu[0])  # -5 everywhere
    want = ((1 - t) * (fake.detach() - want_target).square().flatten(1).mean(1)).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5) and m["distill"] == pytest.approx(want.item(), rel=1e-5)
    loss.backward()
    assert (fake.grad * (fake.detach() - want_target) >= 0).all()  # descending moves each value to -5


def test_feature_matching_reaches_every_generator_parameter():
    g = OneStepGenerator(WanBackbone(tiny_transformer(seed=1)))
    d = Discriminator.from_teacher(WanBackbone(tiny_transformer()))
    x, z, text = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4), torch.randn(2, 5, 16)
    t, noise = torch.rand(2), torch.randn_like(x)
    _, fake_feats = d(g(z, text), text, t=t, noise=noise, return_features=True)
    with torch.no_grad():
        _, real_feats = d(x, text, t=t, noise=noise, return_features=True)
    assert [f.shape for f in fake_feats] == [(2, 12, 24)] * len(d.taps)
    losses.feature_matching(real_feats, fake_feats).backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.slow
def test_torchrun_two_process_apt_resumes_to_identical_losses(tmp_path, tiny_model_dir):
    straight_and_resumed_runs(ROOT / "scripts" / "train_apt.py", TOY, [
        f"model.path={tiny_model_dir}", "adv.generator_init=teacher", "data.num_clips=32",
        "train.micro_batch_size=4", "train.global_batch_size=16", "train.checkpoint_every=2",
        "parallel.mixed_precision=bf16", "parallel.activation_checkpointing=true", "adv.r1_every=2"], tmp_path)
    keys = ("d_loss", "g_loss", "aR1", "d_real", "d_fake")  # aR1 only on penalised steps (1 and 3)
    straight = {m["step"]: [m.get(k) for k in keys] for m in read_metrics(tmp_path / "straight")}
    split = {m["step"]: [m.get(k) for k in keys] for m in read_metrics(tmp_path / "split")}
    assert sorted(straight) == sorted(split) == [1, 2, 3, 4]
    assert straight[3][2] is not None and straight[4][2] is None
    assert split[3] == straight[3] and split[4] == straight[4]
    assert all(v > 0 for v in straight[1][:2])
    # the stage-2 EMA generator loads through the same path as stage 1's
    from apt.training.run_folder import load_generator as load_generator_from_checkpoint

    z, text = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 32, 16)
    a = load_generator_from_checkpoint(tmp_path / "straight", tiny_model_dir)(z, text)
    b = load_generator_from_checkpoint(tmp_path / "split", tiny_model_dir)(z, text)
    assert torch.allclose(a, b, atol=1e-6)


def test_penalised_d_pass_equals_two_separate_calls():
    """Critic.penalised_pass runs the clean and the sigma-perturbed copy as one batch: same logits and aR1 as two
    calls at the same t and noise."""
    from apt.training.distributed import DistInfo

    cfg = load_config(APTConfig, TOY, ["parallel.fsdp=false"])
    dist = DistInfo(0, 1, 0, torch.device("cpu"), "gloo")
    stage = AdversarialPostTraining(cfg, dist, WanBackbone(tiny_transformer()), WanBackbone(tiny_transformer(seed=1)),
                                    previews=None)
    x, text = torch.randn(3, 4, 3, 4, 4), torch.randn(3, 5, 16)
    torch.manual_seed(7)
    logits, r1, reference = stage.critic.penalised_pass(x, text, weight=100.0, sigma=0.1, keep_reference=True)
    torch.manual_seed(7)
    t, noise = stage.critic.renoising(x)
    perturbed = losses.perturb(x, 0.1)
    d = stage.discriminator
    want_logits, want_perturbed = d(x, text, t=t, noise=noise), d(perturbed, text, t=t, noise=noise)
    torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r1, losses.approximate_r1(want_logits, want_perturbed), rtol=1e-4, atol=1e-9)
    assert r1.item() > 0
    # kept for the G step: the clean copy's re-noising and outputs
    assert torch.equal(reference.t, t) and torch.equal(reference.noise, noise)
    torch.testing.assert_close(reference.logits, want_logits, rtol=1e-5, atol=1e-6)
    want_features = d(x, text, t=t, noise=noise, return_features=True)[1]
    for got, want in zip(reference.features, want_features, strict=True):  # batch means, what matching reads
        torch.testing.assert_close(got, want.mean(0, keepdim=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("step", [0, 1])  # 0: aR1 on (the real pass with its perturbed copy), 1: the fused pass
def test_generator_step_takes_its_real_reference_from_the_d_step(step):
    """adv.real_reference=discriminator_step: the G step runs D on G's samples only, re-noised as the D
    step re-noised the real clips, and feature matching compares with D's real token states of that pass;
    "fresh" runs a second, real pass in the G step."""
    from apt.training.distributed import DistInfo

    dist = DistInfo(0, 1, 0, torch.device("cpu"), "gloo")
    x, text = torch.randn(3, 4, 3, 4, 4), torch.randn(3, 5, 16)
    batch = {"latent": x, "text": text, "caption": ["a"] * 3}
    for reference in ("fresh", "discriminator_step"):
        cfg = load_config(APTConfig, TOY, [
            "parallel.fsdp=false", "adv.probe_every=0", "adv.r1_every=2", "adv.share_generator_pass=true",
            "adv.feature_matching_weight=1", "adv.feature_matching_every=1", f"adv.real_reference={reference}",
            "train.micro_batch_size=3", "train.global_batch_size=3"])
        stage = AdversarialPostTraining(cfg, dist, WanBackbone(tiny_transformer()),
                                        WanBackbone(tiny_transformer(seed=1)), previews=None)
        calls, d_logits = [], stage.critic.logits

        def recorded(x0, text, t, noise, return_features=False):
            out = d_logits(x0, text, t, noise, return_features)
            calls.append({"x0": x0.detach().clone(), "t": t, "noise": noise, "out": out,
                          "g_step": not stage.d_trainable[0].requires_grad})
            return out

        stage.critic.logits = recorded
        torch.manual_seed(0)
        m = stage.train_step([batch], step)
        g_calls = [c for c in calls if c["g_step"]]
        if reference == "fresh":
            assert len(g_calls) == 2 and torch.equal(g_calls[1]["x0"], x)  # G's samples, then the reals
            continue
        assert len(g_calls) == 1 and not torch.equal(g_calls[0]["x0"], x)
        # the D step's pass holding the real clips: [fake, real] fused, or [real, perturbed real] with aR1
        (d_call,) = [c for c in calls if not c["g_step"] and len(c["x0"]) == 6]
        rows = slice(0, 3) if step == 0 else slice(3, 6)
        assert torch.equal(d_call["x0"][rows], x)
        assert torch.equal(g_calls[0]["t"], d_call["t"][rows])
        assert torch.equal(g_calls[0]["noise"], d_call["noise"][rows])
        want = losses.feature_matching([f[rows] for f in d_call["out"][1]], g_calls[0]["out"][1])
        assert m["feature_matching"] == pytest.approx(want.item(), rel=1e-6) and want.item() > 0


def test_real_reference_from_the_d_step_needs_the_shared_generator_pass():
    with pytest.raises(ConfigError, match="adv.share_generator_pass=true"):
        load_config(APTConfig, TOY, ["adv.real_reference=discriminator_step", "adv.share_generator_pass=false"])
    # without feature matching or the relativistic loss there is no real reference to take
    load_config(APTConfig, TOY, ["adv.real_reference=discriminator_step", "adv.share_generator_pass=false",
                                 "adv.feature_matching_weight=0"])
    with pytest.raises(ConfigError, match="adv.real_reference"):
        load_config(APTConfig, TOY, ["adv.real_reference=stale"])


@pytest.mark.slow
def test_without_approximate_r1_the_discriminator_wins_sooner(tmp_path):
    """The aR1 ablation on the toy world (docs/experiments/2026-11-23-stage2-apt.md): G held still (the teacher as a
    one-step generator, lr 1e-7) so that D can win, D re-noising at low noise (shift 0.1). Without
    aR1 the D loss falls from chance (log 4) within 60 updates of 8 clips; with it (lambda 100, sigma 0.1,
    lazily every 16th step as configured) it stays at chance."""
    last = {}
    for weight in (0, 100):
        out_dir = tmp_path / f"r1_{weight}"
        run_training_script(ROOT / "scripts" / "train_apt.py", TOY, [
            "adv.generator_init=teacher", "data.num_clips=256", "train.steps=60", "adv.lr_generator=1e-7",
            "train.micro_batch_size=4", "train.global_batch_size=8",
            "adv.lr_discriminator=5e-4", "adv.lr_heads=5e-5", "adv.d_shift=0.1", f"adv.r1_weight={weight}",
            "adv.collapse_patience=1000", "train.checkpoint_every=1000", "train.sample_every=0",
            f"train.out_dir={out_dir}"], tmp_path)
        d_loss = [m["d_loss"] for m in read_metrics(out_dir)]
        assert len(d_loss) == 60
        last[weight] = sum(d_loss[-20:]) / 20
    # measured here: 1.09 without aR1, 1.38 with it (log 4 = 1.39 at chance)
    assert last[0] < last[100] - 0.2, last


def test_update_benchmark_prints_each_variant_against_the_teacher_pass():
    """scripts/benchmark_update.py, one round of 2 clips: every variant's update runs, one that decodes G's
    samples (a reward, whose value holds commas) included, and gets a ratio to the teacher's pass."""
    import os
    import subprocess
    import sys

    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark_update.py"), "--rounds", "1", "--batch", "2",
                          "--variant", "default:", "--variant", "lazy:adv.r1_every=4",
                          "--variant", "reward:adv.rewards=[{kind: toy, weight: 1.0}],adv.r1_every=1"],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {line[:34].strip(): line.split() for line in run.stdout.splitlines()}
    assert float(rows["teacher forward+backward"][-1]) == 1.0
    assert all(float(rows[f"update ({name})"][-1]) > 1 for name in ("default", "lazy", "reward"))
