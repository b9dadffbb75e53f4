"""Thin entry point: videos + captions -> latent/text shards; see apt/data/preprocess.py.

    python scripts/preprocess.py --videos data/clips --captions data/clips.csv --config configs/wan2.1-1.3b/apt-video.yaml
    torchrun --nproc_per_node 8 scripts/preprocess.py --videos data/clips --model /ckpt/Wan2.1-T2V-1.3B-Diffusers \
        --out data/shards/video-720p49 --frames 49 --height 720 --width 1280 --fps 24
"""

from apt.data.preprocess import main
from apt.distributed import exit_cleanly

if __name__ == "__main__":
    main()
    exit_cleanly(0)
