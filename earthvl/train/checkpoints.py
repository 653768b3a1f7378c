"""Atomic checkpoints and `--resume` for every earthvl trainer.

transformers' `Trainer` writes `checkpoint-N` in place, so a run killed mid-save leaves a folder that looks like
the newest checkpoint but lacks files, and resuming from it fails or, worse, loads half a state. Here a
checkpoint is written into `<output_dir>/.checkpoint-staging/` and renamed to `checkpoint-N` only once complete;
`last_checkpoint` sees complete checkpoints only.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints

logger = logging.getLogger(__name__)

STAGING = ".checkpoint-staging"


class AtomicCheckpoints:
    """Mixin for a `transformers.Trainer` subclass: checkpoints appear whole or not at all.

    The upstream `_save_checkpoint` runs unchanged against a staging run folder; the finished `checkpoint-N` is then
    renamed into the real one, and only after that are older checkpoints rotated out."""

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = self._get_output_dir(trial=trial)
        staging = os.path.join(run_dir, STAGING)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._get_output_dir = lambda trial: staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
        self.accelerator.wait_for_everyone()
        if not self.args.should_save:
            return
        staged, final = os.path.join(staging, name), os.path.join(run_dir, name)
        best = self.state.best_model_checkpoint
        if best and os.path.abspath(best) == os.path.abspath(staged):
            self.state.best_model_checkpoint = final  # the saved state must name where the checkpoint will be
            self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
        if os.path.isdir(final):  # the same step saved again (e.g. a final save): the old copy goes first
            shutil.rmtree(final)
        os.replace(staged, final)
        shutil.rmtree(staging, ignore_errors=True)
        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
            use_mtime=False,
        )


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir` (None if there is none); an unfinished save is removed."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    staging = output_dir / STAGING
    if staging.exists():
        logger.warning("removing %s: a checkpoint save that did not finish", staging)
        shutil.rmtree(staging)
    return get_last_checkpoint(str(output_dir))
