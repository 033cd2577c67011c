"""Training (the release's three recipes) on Hugging Face Accelerate, and the ``synth --train`` data.

``python -m bokehdepth_core train {adapter,dav2,unidepth} --config FILE`` (see ``docs/training.md``);
from Python: ``recipe_config(name, file, flags)`` then ``run_training(name, cfg)``.
"""

from .cli import recipe_config, register, run_training

__all__ = ["recipe_config", "register", "run_training"]
