"""Configs shipped inside the package (the demo and bench base config)."""

from pathlib import Path

CONFIG_DIR = Path(__file__).parent


def packaged_config(name: str) -> Path:
    return CONFIG_DIR / f"{name}.yaml"
