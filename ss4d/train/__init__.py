"""ss4d.train: trainers for the four SS4D stages (SS VAE, 4D SLat VAE, 4D SS flow, 4D SLat flow).

`python -m ss4d.train CONFIG.json` (or `torchrun --nproc_per_node N -m ss4d.train CONFIG.json`); see
`docs/training.md`. Programmatic use: `ss4d.train.train(config_dict_or_path)`.
"""
from .checkpoints import TrainCheckpointError, init_from_trellis, official_init
from .loop import DataError, SyntheticClips, collate, load_config, train
from .trainers import (
    TRAINERS,
    ConfigError,
    NonFiniteLossError,
    SLatFlowTrainer,
    SLatVAETrainer,
    SSFlowTrainer,
    SSVAETrainer,
    Trainer,
    TrainingError,
    encode_slat,
    encode_ss_latents,
    slat_normalization_stats,
)

__all__ = ["train", "load_config", "collate", "SyntheticClips", "DataError", "ConfigError", "TrainingError",
           "NonFiniteLossError", "TrainCheckpointError", "Trainer", "SSVAETrainer", "SLatVAETrainer",
           "SSFlowTrainer", "SLatFlowTrainer", "TRAINERS", "encode_ss_latents", "encode_slat",
           "slat_normalization_stats", "official_init", "init_from_trellis"]
