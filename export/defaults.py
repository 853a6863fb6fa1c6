"""The demo models: train -> export -> store for a task name, composed from the stages' own configs.

`make serve` builds them on a fresh machine (through `textcls build-defaults`): the offline base
model fine-tuned on the task's demo set, exported with the demo dev set so every variant's
accuracy is checked, and stored under the task's name, which is what the service serves by
default. The composition is here, over ``TrainConfig`` and ``ExportConfig``, never by calling CLI
commands: an option added to a stage gets its default from the stage's config, so it cannot break
the build of the defaults.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, Field, field_validator

from core.tasks import TASKS
from export.bundle_export import ExportConfig, export
from train.finetune import TrainConfig, train

log = logging.getLogger(__name__)


class DefaultsConfig(BaseModel):
    """How the demo models are built; the defaults are what `make serve` builds."""

    tasks: list[str] = Field(default_factory=lambda: list(TASKS), min_length=1,
                             description="tasks to build: sentiment, topic")
    force: bool = Field(False, description="rebuild even when the store already holds the task's model")
    base_model: str | None = Field(None, description="hub id or directory; default: the offline MiniLM")
    epochs: float = Field(3.0, gt=0, description="passes over the 600 demo texts")
    learning_rate: float = Field(1e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8)
    seed: int = 42
    checkpoints: Path = Field(Path("checkpoints"), description="checkpoints go to <checkpoints>/<task>")
    bundles: Path = Field(Path("bundles"), description="bundles go to <bundles>/<task>")
    strict: bool = Field(False, description="refuse a bundle in which any variant failed (see ExportConfig)")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"no demo model for {unknown}; the demo tasks are {list(TASKS)}")
        return list(dict.fromkeys(tasks))


def train_config(task: str, config: DefaultsConfig) -> TrainConfig:
    """The training run of a demo model: no data named, so the task's demo set (train.finetune)."""
    return TrainConfig(task=task, output=config.checkpoints / task, base_model=config.base_model,
                       max_length=config.max_length, epochs=config.epochs,
                       learning_rate=config.learning_rate, batch_size=config.batch_size,
                       seed=config.seed)


def export_config(task: str, config: DefaultsConfig) -> ExportConfig:
    """The export of a demo model: every variant, checked on the demo dev set, stored."""
    from train.demo_data import demo_path

    return ExportConfig(checkpoint=config.checkpoints / task, task=task, output=config.bundles / task,
                        eval_data=str(demo_path(task, "dev")), strict=config.strict)


@dataclass
class DefaultModel:
    """One demo model: what the store holds for the task and, when it was built now, how long each
    stage took."""

    task: str
    store_tag: str
    built: bool
    manifest: dict  # manifest.json's object (Manifest.to_dict()), what the CLI prints
    train_seconds: float | None = None
    export_seconds: float | None = None
    train_accuracy: float | None = None


def build_default_model(task: str, config: DefaultsConfig | None = None,
                        progress: Callable[[str], None] | None = None) -> DefaultModel:
    """Train, export and store the demo model of `task`, whatever the store holds."""
    config = config or DefaultsConfig(tasks=[task])
    step = progress or log.info
    step(f"{task}: training on the demo set")
    t0 = time.perf_counter()
    info = train(train_config(task, config))
    train_seconds = time.perf_counter() - t0
    step(f"{task}: exporting and checking every variant")
    t0 = time.perf_counter()
    manifest = export(export_config(task, config), progress=progress)
    return DefaultModel(task=task, store_tag=manifest["store_tag"], built=True, manifest=manifest,
                        train_seconds=round(train_seconds, 1),
                        export_seconds=round(time.perf_counter() - t0, 1),
                        train_accuracy=info["eval"]["accuracy"])


def stored_default(task: str) -> DefaultModel | None:
    """The task's latest model in the store when it is a usable bundle, else None."""
    from engine.bundle import BundleError, resolve_bundle

    try:
        bundle = resolve_bundle(task)
    except BundleError:
        return None
    return DefaultModel(task=task, store_tag=f"{task}:{bundle.path.name}", built=False,
                        manifest=bundle.manifest.to_dict())


def build_defaults(config: DefaultsConfig | None = None,
                   progress: Callable[[str], None] | None = None) -> list[DefaultModel]:
    """The demo model of every task in ``config.tasks``: the stored one, or (when there is none, or
    with ``force``) a new one built by `build_default_model`."""
    config = config or DefaultsConfig()
    out = []
    for task in config.tasks:
        existing = None if config.force else stored_default(task)
        out.append(existing or build_default_model(task, config, progress))
    return out
