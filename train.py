"""Train namegen: `python train.py [overrides]`, or sweep: `python train.py -m init=naive,kaiming norm=none,batchnorm`."""

import hydra
from omegaconf import DictConfig

import namegen.sweep  # noqa: F401  registers the job-name resolver the config uses
from namegen.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return train(cfg).get("val/loss")


if __name__ == "__main__":
    main()
