"""Generate videos from prompts: a teacher folder (multi-step, CFG), a training checkpoint or an export
(one step, or --steps 2). Writes one H.264 mp4 per prompt and reports seconds per phase.

    apt-generate --prompt "a red seven moving up and to the left" --out out/red7.mp4
    apt-generate --checkpoint outputs/quickstart/apt --prompts-file prompts.txt --grid out/grid.png
    apt-generate --config configs/wan2.1-14b/generate.yaml --checkpoint runs/wan2.1-14b-apt-video --prompt "..."
    apt-generate --model exports/toy-apt --prompt "..."          # an exported folder: one step
    apt-generate --model exports/toy-apt --decoder fast --prompt "..."   # the fast decoder (the export's
                                                                  # serving bundle, if it has one)
    torchrun --nproc_per_node 8 scripts/generate.py --model exports/wan14b-apt --prompt "..."   # 8 GPUs

Under torchrun the DiT's tokens are split over the ranks (diffusers' context parallelism) and the VAE
decode's tiles are dealt to them; rank 0 writes.

Defaults follow the model: a folder's seaweed_apt.json gives its native size (the toy: 32x32x9 at
8 fps), any other model samples 1280x720x49 at 24 fps (2 s). One-step models use no CFG: it was
distilled into them. --config YAML takes the option names below (underscores) as keys; flags and
key=value overrides win over it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from apt.core.command import console_script, run_command
from apt.core.config import ConfigError, option, parse_command
from apt.inference.decoders import KINDS as DECODERS
from apt.inference.decoders import parse_tiles

WEIGHTS = ("ema", "generator", "student")
DTYPE_NAMES = ("bf16", "fp32")
MAX_TEACHER_STEPS = 1000
MAX_SIDE, MAX_FRAMES, MAX_UPSCALE = 8192, 1025, 16  # beyond any video these models make: a typo, not a request


@dataclass
class GenerateConfig:
    model: str = option("", "diffusers-layout folder, an export, or a shipped model name ('toy'); "
                            "default: the checkpoint's teacher, else toy")
    checkpoint: str = option("", "training run or step folder: sample its one-step generator")
    weights: str = option("ema", "which model of the checkpoint", choices=WEIGHTS)
    prompts: list[str] = option(help="a prompt; repeat the flag for several", flag="--prompt", default_factory=list)
    prompts_file: str = option("", "text file, one prompt per line (# comments)")
    negative_prompt: str = option("", "teacher CFG's negative prompt")
    steps: int = option(0, "sampling steps; 0 = the model's default (teacher 25, one-step 1; 2 also works)")
    guidance_scale: float = option(0.0, "teacher CFG scale; 0 = 5 for a teacher, one-step models take only 1",
                                   aliases=("--cfg",))
    shift: float = option(3.0, "timestep shift of the teacher's schedule")
    renoise_t: float = option(0.5, "--steps 2: the time the first output is re-noised to")
    seed: int = option(0, "sample i uses seed + i, whatever the batching")
    height: int = option(0, "0 = the model's native size")
    width: int = option(0, "0 = the model's native size")
    frames: int = option(0, "0 = the model's native length")
    fps: int = option(0, "0 = the model's native frame rate")
    upscale: int = option(0, "nearest-neighbour upscale of written videos and grids; 0 = the model's")
    out: str = option("", "an .mp4 path (one prompt) or a folder (one mp4 per prompt); "
                          "default outputs/generate/<run or model>-<mode>-<decoder>")
    grid: str = option("", "frame-grid PNG of all clips; default <out>/grid.png when out is a folder")
    report: str = option("", "JSON report; default <out>/report.json when out is a folder")
    batch_size: int = option(8, "clips per DiT and VAE call")
    device: str = option("", "cpu, cuda, cuda:1 ...; default: cuda if available")
    dtype: str = option("", "DiT and text encoder dtype; default bf16 on CUDA, fp32 on CPU", choices=DTYPE_NAMES)
    decoder: str = option("vae", "latents to video: the full VAE decoder, or the distilled fast decoder "
                                 "(the model folder's fast_decoder/, apt-train-decoder)", choices=DECODERS)
    fast_decoder: str = option("", "--decoder fast: a fast decoder folder other than the model folder's")
    vae_dtype: str = option("", "VAE / fast decoder dtype; default bf16 on CUDA, fp32 on CPU", choices=DTYPE_NAMES)
    attention_backend: str = option("native", "diffusers attention backend: native (torch SDPA), flash, xformers, ...")
    ring_degree: int = option(1, "under torchrun: ranks per ring-attention group (GPU backends only); the DiT's "
                                 "sequence is split over all ranks, heads over world / ring_degree (Ulysses)")
    vae_tiles: str = option("auto", "VAE decode in overlapping spatial tiles: ROWSxCOLS (e.g. 2x4), off, or auto "
                                    "(one tile per rank under torchrun, off in one process)")
    vae_tile_overlap: int = option(8, "overlap of VAE tiles in latent cells (8 = 64 pixels for Wan)")
    serving_bundle: str = option("auto", "an export's TorchScript serving bundle (apt-export --serving-bundle): "
                                         "auto = use it when the request is the traced one (--decoder fast, one "
                                         "step, native size, CPU) and it was built on this machine; trust = also "
                                         "when it was not (loading one runs its code: trust its source); off = "
                                         "never", choices=("auto", "trust", "off"))

    def validate(self):
        if self.weights not in WEIGHTS:
            raise ConfigError(f"weights must be one of {', '.join(WEIGHTS)}, got {self.weights!r}")
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder must be vae or fast, got {self.decoder!r}")
        if self.fast_decoder and self.decoder != "fast":
            raise ConfigError("fast_decoder is a --decoder fast option: add --decoder fast")
        for key in ("dtype", "vae_dtype"):
            if getattr(self, key) not in ("", *DTYPE_NAMES):
                raise ConfigError(f"{key} must be one of {', '.join(DTYPE_NAMES)}, got {getattr(self, key)!r}")
        for key in ("steps", "height", "width", "frames", "fps", "upscale"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be positive (0 = the model's default), got {getattr(self, key)}")
        for key, most in (("height", MAX_SIDE), ("width", MAX_SIDE), ("frames", MAX_FRAMES), ("upscale", MAX_UPSCALE)):
            if getattr(self, key) > most:
                raise ConfigError(f"{key} must be at most {most}, got {getattr(self, key)}")
        if self.device and not re.fullmatch(r"cpu|(cuda|xpu)(:\d+)?|mps", self.device):
            raise ConfigError(f"device must be cpu, cuda, cuda:N, xpu, xpu:N or mps, got {self.device!r}")
        if self.steps > MAX_TEACHER_STEPS:
            raise ConfigError(f"steps must be at most {MAX_TEACHER_STEPS}, got {self.steps}")
        if self.guidance_scale < 0 or self.batch_size < 1:
            raise ConfigError("guidance_scale must be >= 0 and batch_size >= 1")
        if self.serving_bundle not in ("auto", "trust", "off"):
            raise ConfigError(f"serving_bundle must be auto, trust or off, got {self.serving_bundle!r}")
        if self.ring_degree < 1 or self.vae_tile_overlap < 0:
            raise ConfigError("ring_degree must be >= 1 and vae_tile_overlap >= 0")
        if self.vae_tiles not in ("auto", "off"):
            parse_tiles(self.vae_tiles)
        if not 0.0 < self.renoise_t <= 1.0:
            raise ConfigError(f"renoise_t must be in (0, 1], got {self.renoise_t}")


def parse_args(argv=None) -> GenerateConfig:
    return parse_command(GenerateConfig, argv, __doc__, prog="apt-generate")


def generate(argv=None, cfg: GenerateConfig | None = None, keep_tensors: bool = True):
    """The whole command (apt/inference/engine.py), returning its Result (None on ranks other than 0);
    keep_tensors=False streams (the clips are only written)."""
    from apt.inference.engine import generate as run

    return run(cfg or parse_args(argv), keep_tensors)


def main(argv=None) -> dict | None:
    def command():
        result = generate(argv, keep_tensors=False)
        if result is None:  # a rank other than 0 under torchrun
            return None
        print(json.dumps(result.report, indent=2))
        return result.report

    return run_command(command)


cli = console_script(main, distributed=True)
