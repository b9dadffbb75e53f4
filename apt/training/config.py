"""The sections every training run's config has (model, data, parallel, train, preview) and the rule
for what a resumed run may change. A stage's config adds its own section (cd, adv)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from omegaconf import OmegaConf

from apt.core.config import ConfigError, flatten
from apt.data.sources import data_sources
from apt.models.lora import LoRAConfig


@dataclass
class ParallelConfig:
    fsdp: bool = True  # FSDP2 fully_shard per block; a 1-process run uses a world-of-one group
    activation_checkpointing: bool = True  # recompute each block in backward: keeps one block's activations, not all
    mixed_precision: str = "fp32"  # "bf16": bf16 params/compute, fp32 gradient reduction
    # false keeps each block's gathered weights from forward to backward (one all-gather per block
    # per step, not two): faster, at the memory of unsharded weights for the whole step (ZeRO-2-like)
    reshard_after_forward: bool = True
    # ranks that split each sample's token sequence (Ulysses attention, diffusers' context parallelism):
    # activations per rank / N, the ranks / N data-parallel groups; must divide the ranks, the attention
    # heads and the token count. 1 = off. FSDP2 shards the weights over all ranks either way.
    context_parallel: int = 1

    def validate(self):
        if self.context_parallel < 1:
            raise ConfigError(f"parallel.context_parallel must be >= 1, got {self.context_parallel}")
        if self.context_parallel > 1 and not self.fsdp:
            raise ConfigError("parallel.context_parallel > 1 needs parallel.fsdp=true (FSDP2 reduces the gradients)")
        if self.mixed_precision not in ("bf16", "fp32"):
            raise ConfigError(f"parallel.mixed_precision must be 'bf16' or 'fp32', got {self.mixed_precision!r}")
        if self.mixed_precision == "bf16" and not self.fsdp:
            # bf16 compute with fp32 master weights is FSDP2's MixedPrecisionPolicy; without FSDP it
            # would silently become pure-bf16 training
            raise ConfigError("parallel.mixed_precision=bf16 needs parallel.fsdp=true")


@dataclass
class TrainConfig:
    steps: int = 100  # optimiser updates of the run (a resume may raise it)
    micro_batch_size: int = 8  # per data-parallel group (a rank, or a context-parallel group), per forward/backward
    # samples per optimiser update over all ranks; gradient accumulation makes up the difference:
    # grad_accum = global_batch_size / (micro_batch_size x data-parallel groups). 0 = one micro-batch each.
    global_batch_size: int = 0
    seed: int = 0  # data order and each data-parallel group's noise (group g draws from seed + g)
    log_every: int = 1  # updates between lines of metrics.jsonl (and TensorBoard)
    checkpoint_every: int = 100  # updates between checkpoints (and one at the end)
    sample_every: int = 100  # 0 = only at the end
    keep_checkpoints: int = 2  # newest checkpoints kept; older ones are deleted
    out_dir: str = "runs/default"  # the run folder (apt/training/run_folder.py); the same command resumes it
    resume: str = "auto"  # "auto": latest checkpoint in out_dir if any; "never"; or a checkpoint path
    tensorboard: bool = True  # also log to <out_dir>/tensorboard when the tensorboard package is installed
    peak_tflops: float = 0.0  # per-device peak for the logged MFU; 0 = known GPUs' bf16 peak, none on CPU
    # A resume whose config differs from the run's config.yaml (beyond RESUME_FREE_KEYS) stops with the
    # differences listed; true applies them (optimiser settings included) and records them in
    # config_changes.jsonl.
    allow_config_change: bool = False

    def validate(self):
        self.out_dir = str(Path(self.out_dir).expanduser())  # a shell does not expand ~ inside key=value
        if self.resume not in ("auto", "never"):
            self.resume = str(Path(self.resume).expanduser())
        for key in ("steps", "micro_batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("seed", "sample_every", "global_batch_size", "peak_tflops"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)}")

    def grad_accum(self, world_size: int) -> int:
        """Micro-batches per update on each rank, from the global batch size; `world_size` counts the
        data-parallel groups (ranks / parallel.context_parallel: a group shares its samples)."""
        per_pass = self.micro_batch_size * world_size
        if not self.global_batch_size:
            return 1
        if self.global_batch_size % per_pass:
            raise ConfigError(f"train.global_batch_size={self.global_batch_size} is not a multiple of "
                              f"train.micro_batch_size x data-parallel groups = {self.micro_batch_size} x "
                              f"{world_size} (ranks / parallel.context_parallel)")
        return self.global_batch_size // per_pass


@dataclass
class ModelConfig:
    path: str = "toy"  # a diffusers-layout Wan folder, or the name of a shipped one ("toy")
    # train a low-rank adapter of the generator (stage 1's student, stage 2's G) instead of every weight
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    def validate(self):
        self.lora.validate()


@dataclass
class DataConfig:
    # a registered source (apt/data/sources.py): "shards" (apt-preprocess output) or a plugin's
    # ("toy": the toy world, encoded once and cached)
    source: str = "toy"
    path: str = ""  # shards: the shard-set folder (holds index.json)
    frames: int = 9  # clip length in pixel frames (1 = images); shards: must match the set's index
    height: int = 0  # shards: clip size the set must have; 0 = take the index's (the toy world is 32x32)
    width: int = 0  # shards: clip width the set must have; 0 = take the index's
    fps: float = 0.0  # shards: frame rate the set must have; 0 = take the index's
    num_clips: int = 4096  # toy only
    seed: int = 0  # toy only
    cache_dir: str = ""  # toy only: "" = $APT_CACHE_DIR or ~/.cache/seaweed-apt
    # toy only: real latents refined through the frozen VAE decoder (VideoVAE.refine: Adam steps on the
    # decode's pixel error from the encoder's latent), so that they decode as sharp as the clips; 0 = off
    refine_steps: int = 0
    refine_lr: float = 0.08  # toy only: the refinement's Adam learning rate
    # toy only: this fraction of the clips (a fixed random choice) holds the teacher's samples for their
    # captions instead of the real latents (LADD's synthetic data), `teacher_steps` Euler steps with
    # guidance `teacher_guidance`; drawn once (the ranks share the work) and cached; 0 = off
    teacher_fraction: float = 0.0
    teacher_steps: int = 25  # toy only: Euler steps of the teacher's samples (data.teacher_fraction)
    teacher_guidance: float = 5.0  # toy only: their classifier-free guidance scale

    def validate(self):
        self.path, self.cache_dir = (str(Path(v).expanduser()) if v else v for v in (self.path, self.cache_dir))
        if self.source not in data_sources():
            raise ConfigError(f"data.source must be one of {', '.join(data_sources())}, got {self.source!r}")
        if self.source == "shards" and not self.path:
            raise ConfigError("data.path: give the shard folder written by apt-preprocess")
        if self.frames < 1:
            raise ConfigError(f"data.frames must be >= 1, got {self.frames}")
        for key in ("height", "width", "fps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key} must be >= 0 (0 = any), got {getattr(self, key)}")
        if self.num_clips < 1:
            raise ConfigError(f"data.num_clips must be positive, got {self.num_clips}")
        if self.refine_steps < 0 or self.refine_lr <= 0:
            raise ConfigError(f"data.refine_steps must be >= 0 and data.refine_lr > 0, got {self.refine_steps} "
                              f"and {self.refine_lr}")
        if self.refine_steps and self.source == "shards":
            raise ConfigError("data.refine_steps refines the toy world's latents; a shard set holds latents only "
                              "(no clips to refine them against): set data.refine_steps=0")
        if not 0 <= self.teacher_fraction <= 1 or self.teacher_steps < 1:
            raise ConfigError(f"data.teacher_fraction must be in [0, 1] and data.teacher_steps >= 1, got "
                              f"{self.teacher_fraction} and {self.teacher_steps}")
        if self.teacher_fraction and self.source == "shards":
            raise ConfigError("data.teacher_fraction replaces toy-world clips with the teacher's samples; a shard set's "
                              "clips are not replaced: set data.teacher_fraction=0")


@dataclass
class PreviewConfig:
    """Sample videos written during training, at fixed prompts and seeds (prompts=[]: none)."""

    # prompts of the sample videos; [] = none (at 720p each costs a VAE decode)
    prompts: list[str] = field(default_factory=lambda: [
        "a red seven moving up and to the left",
        "a blue two moving right",
        "a yellow four moving down",
        "a cyan zero moving up and to the right",
    ])
    seed: int = 1000  # prompt i uses seed + i, the same at every sampling step
    fps: int = 8  # frame rate of the written mp4s
    upscale: int = 4  # nearest-neighbour upscale of the written mp4s and grid


@dataclass
class RunConfig:
    """Sections every training run has; a stage's config adds its own section (cd, adv)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)

    def validate(self):
        for f in fields(self):
            part = getattr(self, f.name)
            if hasattr(part, "validate"):
                part.validate()


# Keys a resumed run may change without train.allow_config_change: they decide how long a run goes
# and what it logs, not what it learns.
RESUME_FREE_KEYS = ("train.steps", "train.resume", "train.out_dir", "train.log_every", "train.checkpoint_every",
                    "train.sample_every", "train.keep_checkpoints", "train.tensorboard", "train.peak_tflops",
                    "train.allow_config_change", "preview.")


def config_changes(saved: str | Path, cfg) -> dict[str, tuple]:
    """{key: (value in the saved config.yaml, value now)} for every key that differs, free keys aside.
    Keys only one side has (options added or removed by another version of this package) are skipped."""
    old = flatten(OmegaConf.to_container(OmegaConf.load(saved)))
    new = flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))
    return {k: (old[k], new[k]) for k in sorted(set(old) & set(new))
            if old[k] != new[k] and not k.startswith(RESUME_FREE_KEYS)}


