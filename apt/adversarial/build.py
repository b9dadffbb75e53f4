"""Stage 2's parts from a config: the generator it starts from, the stage (models, optimisers, the
units of its step), the discriminator it may continue from. The command is apt/cli/train.py."""

from __future__ import annotations

from apt.adversarial.config import APTConfig


def check_inputs(cfg: APTConfig) -> None:
    """Fail before the data is encoded and the models are loaded when a run it starts from is missing."""
    from apt.models.model_folder import is_one_step
    from apt.training.run_folder import resolve_checkpoint

    for key, spec in (("generator_init", cfg.adv.generator_init), ("discriminator_init", cfg.adv.discriminator_init)):
        if key == "generator_init" and is_one_step(spec):
            continue  # an export folder (apt-export)
        if spec and spec != "teacher":
            try:
                resolve_checkpoint(spec)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"adv.{key}={spec}: {err} (run the stage it comes from first, or point "
                                        f"it at that run's folder)") from None
    if cfg.adv.reward_prompts:
        from apt.rewards.prompts import read_prompts

        read_prompts(cfg.adv.reward_prompts)


def initial_generator(spec: str, teacher, model_dir=None, keep_adapter: bool = False):
    """The stage-1 EMA generator (run dir or checkpoint dir, or an apt-export folder), loaded before any
    sharding. A LoRA stage 1 gives the teacher with its adapter, kept apart for a LoRA stage 2 to continue
    (keep_adapter) or folded in for a stage 2 of all weights; a LoRA adapter that stage 2 adds to full
    weights records them as its base (`lora_base`)."""
    import copy
    from pathlib import Path

    from apt.models.backbone import WanBackbone
    from apt.models.model_folder import is_one_step, verify_files
    from apt.training.checkpoint import load_model_from_checkpoint
    from apt.training.lora_weights import checkpoint_lora
    from apt.training.run_folder import adapter_generator, resolve_checkpoint

    backbone = WanBackbone(copy.deepcopy(teacher.model))
    if spec == "teacher":
        return backbone
    if is_one_step(spec):  # safetensors: no pickle is read; load_state_dict casts to the backbone's dtype
        verify_files(spec, ("transformer",))
        backbone.load_state_dict(WanBackbone.from_pretrained(spec).state_dict())
        backbone.lora_base = str(Path(spec).resolve())
        return backbone
    try:
        checkpoint = resolve_checkpoint(spec, verify=True)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"adv.generator_init={spec}: {err}") from err
    record = checkpoint_lora(checkpoint).get("ema")
    if record:  # stage 1 trained an adapter: continue it on its base
        return adapter_generator(checkpoint, "ema", record, model_dir, merge=not keep_adapter).train()
    load_model_from_checkpoint(checkpoint, "ema", backbone, verify=False)  # verified just above
    backbone.lora_base = str(checkpoint.resolve())
    return backbone


def build_stage(cfg: APTConfig, dist, comps, previews, dataset):
    import torch

    from apt.adversarial.stage import AdversarialPostTraining
    from apt.data.stream import collate
    from apt.models.model_folder import resolve_model_dir

    generator = initial_generator(cfg.adv.generator_init, comps.transformer, resolve_model_dir(cfg.model.path),
                                  keep_adapter=cfg.model.lora.enabled)
    # the discriminator's new heads are randomly initialised: the same on every rank and every run
    torch.manual_seed(cfg.train.seed)
    # the caption diagnostic's held clips: the first of the training set, the same in every run
    probe = collate([dataset[i] for i in range(min(cfg.adv.probe_size, len(dataset)))]) if cfg.adv.probe_every else None
    negative = comps.text.encode([cfg.adv.distill_negative_prompt]) if cfg.adv.distill_weight > 0 else None
    prompts = None
    if cfg.adv.reward_prompts:
        from apt.rewards.prompts import PromptStream

        prompts = PromptStream.from_file(cfg.adv.reward_prompts, comps.text, show=dist.rank == 0)
    stage = AdversarialPostTraining(cfg, dist, comps.transformer, generator, previews, probe, vae=comps.vae,
                                    negative_text=negative, reward_prompts=prompts)
    if cfg.adv.discriminator_init:  # D continues from an earlier stage-2 run (e.g. a reward phase after APT)
        from apt.training.checkpoint import load_model_from_checkpoint
        from apt.training.run_folder import resolve_checkpoint

        load_model_from_checkpoint(resolve_checkpoint(cfg.adv.discriminator_init), "discriminator",
                                   stage.discriminator)
    return stage
