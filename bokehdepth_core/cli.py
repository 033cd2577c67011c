"""Command line: ``python -m bokehdepth_core {demo,synth,calib,bench} ...``.

Each command hands its arguments to one core function; a user error (a bad value, a missing or
unreadable file) prints one ``error:`` line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_demo(args) -> int:
    from .demo import run_demo

    report = run_demo(args.out, seed=args.seed, size=args.size)
    print(f"demo results written to {report}")
    return 0


def _cmd_synth(args) -> int:
    from .synthetic import generate_dataset

    paths = generate_dataset(args.out, args.n, size=args.size, seed=args.seed, n_k=args.num_k,
                             foreground_dir=args.foregrounds, background_dir=args.backgrounds,
                             callback=lambda done, total: print(f"scene {done}/{total}", flush=True))
    print(f"{len(paths)} bokeh images of {args.n} scenes written to {args.out} (aif/ images/ depth/ metadata/)")
    return 0


def _cmd_calib(args) -> int:
    from . import exif, optics

    if args.image:
        info = exif.read_lens_exif(args.image)
        cal = exif.calibrate_from_exif(info, f_number=args.f_number, focal_mm=args.focal_mm,
                                       focal_35mm=args.focal_35mm, focus_m=args.focus_m,
                                       sensor_width_mm=args.sensor_width_mm)
    else:
        missing = [n for n in ("f_number", "focal_mm", "focal_35mm", "focus_m", "width", "height")
                   if getattr(args, n) is None]
        if missing:
            raise ValueError(f"give --image or all of: {', '.join('--' + m.replace('_', '-') for m in missing)}")
        cal = optics.calibrate(args.f_number, args.focal_mm, args.focal_35mm, args.focus_m, args.width, args.height)
    print(json.dumps(cal.__dict__, indent=2) if args.json else cal.summary())
    return 0


def _cmd_bench(args) -> int:
    from . import bench

    bench.run(args.target, args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bokehdepth_core",
                                description="BokehDepth engine: calibration, bokeh stacks, metric depth.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="offline demo on a built-in example (no downloads, no weights)")
    d.add_argument("--out", default="bokehdepth_demo", help="output folder (default: ./bokehdepth_demo)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--size", type=int, default=256, help="demo image size in pixels")
    d.set_defaults(func=_cmd_demo)

    s = sub.add_parser("synth", help="write a synthetic bokeh benchmark (aif/ images/ depth/ metadata/)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("-n", type=int, default=10, help="number of scenes")
    s.add_argument("--size", type=int, default=256, help="image size in pixels")
    s.add_argument("--seed", type=int, default=0, help="seed of the first scene (scene i uses seed + i)")
    s.add_argument("--num-k", dest="num_k", type=int, default=3, help="bokeh renderings (K values) per scene")
    s.add_argument("--foregrounds", default=None, help="folder of RGBA PNG foregrounds (default: procedural)")
    s.add_argument("--backgrounds", default=None, help="folder of background photos (default: procedural)")
    s.set_defaults(func=_cmd_synth)

    c = sub.add_parser("calib", help="bokeh strength K from lens values or a photo's EXIF")
    c.add_argument("--image", help="photo with EXIF; lens flags override what it lacks")
    c.add_argument("--f-number", dest="f_number", type=float)
    c.add_argument("--focal-mm", dest="focal_mm", type=float)
    c.add_argument("--focal-35mm", dest="focal_35mm", type=float)
    c.add_argument("--focus-m", dest="focus_m", type=float)
    c.add_argument("--sensor-width-mm", dest="sensor_width_mm", type=float, help="with --image: the sensor width")
    c.add_argument("--width", type=int)
    c.add_argument("--height", type=int)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_calib)

    b = sub.add_parser("bench", help="time a stage on this machine")
    b.add_argument("target", choices=("depth", "render", "stack", "budget"))
    b.add_argument("--model", default=None, help="model family for 'depth' (dav2, unidepthv2); encoder for 'budget' (vits, vitb, vitl)")
    b.add_argument("--size", type=int, default=None, help="input size in pixels")
    b.add_argument("--device", default="cpu")
    b.add_argument("--repeat", type=int, default=3)
    b.add_argument("--steps", type=int, default=None, help="denoising steps for 'stack' (default 10)")
    b.add_argument("--fast-paths", default="all",
                   help="for 'depth': opt-in fast paths to measure, all, none or some of bfloat16,tokens,compile")
    b.set_defaults(func=_cmd_bench)

    from .train import register as register_training  # train, eval and synth --train

    register_training(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # user errors: bad values, missing or unreadable files
        print(f"error: {exc}", file=sys.stderr)
        return 2
