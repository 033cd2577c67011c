"""Command-line entry points of training and evaluation, registered into the package CLI:
``train {adapter,dav2,unidepth}``, ``eval`` and the ``--train`` mode of ``synth``."""

from __future__ import annotations

import json
import os

from .config import add_option_flags, check_common, read_config_file, resolve

RECIPES = ("adapter", "dav2", "unidepth")


def recipe_class(name: str):
    if name == "dav2":
        from .dav2 import DAv2Recipe

        return DAv2Recipe
    if name == "unidepth":
        from .unidepth import UniDepthRecipe

        return UniDepthRecipe
    if name == "adapter":
        from .adapter import AdapterRecipe

        return AdapterRecipe
    raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")


def recipe_config(name: str, config_file=None, flags=None) -> dict:
    """Defaults < config file < flags, for recipe ``name``."""
    cls = recipe_class(name)
    file_options = read_config_file(config_file)
    if hasattr(cls, "flatten_config"):
        file_options = cls.flatten_config(file_options)
    cfg = resolve(cls.DEFAULTS, file_options, flags)
    check_common(cfg)
    return cfg


def run_training(name: str, cfg: dict) -> dict:
    from .loop import train

    return train(recipe_class(name)(), cfg)


def _cmd_train(args) -> int:
    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command", "recipe", "config")}
    cfg = recipe_config(args.recipe, args.config, flags)
    summary = run_training(args.recipe, cfg)
    if os.environ.get("RANK", "0") == "0":  # one summary per run, not per process
        print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_eval(args) -> int:
    from ..evaluate import run_from_args

    return run_from_args(args)


def _cmd_synth_train(args, plain) -> int:
    if not args.train:
        return plain(args)
    from .synth_data import write_training_set

    path = write_training_set(args.out, args.n, size=args.size, seed=args.seed, n_k=args.num_k,
                              focus_frames=args.focus_frames, val_fraction=args.val_fraction,
                              foreground_dir=args.foregrounds, background_dir=args.backgrounds,
                              callback=lambda d, t: print(f"scene {d}/{t}", flush=True))
    print(f"training set of {args.n} scenes written; manifest: {path}")
    return 0


def register(sub) -> None:
    """Add ``train`` and ``eval`` to the CLI's subparsers and the ``--train`` flags to ``synth``."""
    t = sub.add_parser("train", help="train the bokeh adapter or a DSFA depth model (the release's recipes)",
                       description="Options come from the recipe's defaults, then --config (YAML/JSON), then "
                                   "flags. Runs the same under `accelerate launch -m bokehdepth_core train ...`.")
    rsub = t.add_subparsers(dest="recipe", required=True)
    for name in RECIPES:
        cls = recipe_class(name)
        r = rsub.add_parser(name, help=(cls.__doc__ or name).strip().splitlines()[0])
        r.add_argument("--config", default=None, help="YAML or JSON file of options (flags override it)")
        add_option_flags(r, cls.DEFAULTS)
        r.set_defaults(func=_cmd_train)

    from ..evaluate import add_eval_arguments

    e = sub.add_parser("eval", help="depth metrics of a model on a data set, with and without bokeh")
    add_eval_arguments(e)
    e.set_defaults(func=_cmd_eval)

    s = sub.choices.get("synth")
    if s is not None:
        s.add_argument("--train", action="store_true",
                       help="write a ready-to-train set (images, stacks, K, metric depth, intrinsics, manifest.jsonl)")
        s.add_argument("--focus-frames", dest="focus_frames", type=int, default=0,
                       help="with --train: also a focus stack of this many frames per scene")
        s.add_argument("--val-fraction", dest="val_fraction", type=float, default=0.2,
                       help="with --train: share of scenes in the 'val' split")
        plain = s.get_default("func")
        s.set_defaults(func=lambda a, _plain=plain: _cmd_synth_train(a, _plain))
