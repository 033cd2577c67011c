"""Damaged, truncated, mislabelled and non-finite weight files for both stages (the Stage-1 bokeh
adapter, the Stage-2 depth models) through the Python API and the CLI: each is refused with a
message that names the file and the fix, never safetensors', torch's or pickle's internals."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from safetensors.torch import save_file

from bokehdepth_core import cli
from bokehdepth_core.stage1 import BokehAdapter
from bokehdepth_core.stage2 import build_from_checkpoint, build_unidepthv2_dsfa, load_dsfa_checkpoint, read_checkpoint
from bokehdepth_core.testing import tiny_transformer
from support import UNIDEPTH_SMALL, randomize, refusal

INTERNALS = ("SafetensorError", "deserializ", "header", "PytorchStreamReader", "miniz", "central directory",
             "Unpickl", "KeyError", "RuntimeError", "EOFError", "invalid load key", "Traceback", "weights_only=")


@pytest.fixture(scope="module")
def adapter_sd():
    adapter = BokehAdapter.attach(tiny_transformer(), rank=2, alpha=2)
    adapter.detach()
    return {k: v.detach().clone().contiguous() for k, v in adapter.state_dict().items()}


@pytest.fixture(scope="module")
def depth_sd():
    torch.manual_seed(0)
    model = randomize(build_unidepthv2_dsfa(UNIDEPTH_SMALL), seed=3)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _clean(msg: str, name: str) -> str:
    assert name in msg and not [w for w in INTERNALS if w in msg], msg
    return msg


def _damaged_copies(folder, sd, stem):
    """(file name, bytes) of damaged forms of ``sd`` saved as .safetensors and torch pickles."""
    save_file(sd, str(folder / f"{stem}_ok.safetensors"))
    torch.save(sd, folder / f"{stem}_ok.pth")
    torch.save(sd, folder / f"{stem}_legacy.pth", _use_new_zipfile_serialization=False)
    st = (folder / f"{stem}_ok.safetensors").read_bytes()
    zp = (folder / f"{stem}_ok.pth").read_bytes()
    legacy = (folder / f"{stem}_legacy.pth").read_bytes()
    return {
        "cut.safetensors": st[: len(st) // 2],
        "tail.safetensors": st[:-7],
        "junk.safetensors": b"\x00" * 100,
        "oversized.safetensors": b"\xff" * 8 + b"{}",
        "empty.safetensors": b"",
        "cut.pth": zp[: len(zp) // 2],
        "tail.bin": zp[:-300],
        "cut_legacy.pth": legacy[: len(legacy) // 2],
        "junk.bin": b"junk" * 100,
        "empty.pth": b"",
        "text.safetensors.pth": st,  # a safetensors file under a pickle's name
    }


def test_damaged_adapter_files(tmp_path, adapter_sd):
    for name, data in _damaged_copies(tmp_path, adapter_sd, "adapter").items():
        (tmp_path / name).write_bytes(data)
        msg = refusal(lambda: BokehAdapter.from_file(str(tmp_path / name)), name, "adapter")
        _clean(msg, name)
        assert "damaged or truncated" in msg or "not a" in msg, msg
    loaded = BokehAdapter.from_file(str(tmp_path / "adapter_ok.safetensors"))
    assert loaded.source == "adapter_ok.safetensors"


def test_damaged_depth_model_files(tmp_path, depth_sd):
    for name, data in _damaged_copies(tmp_path, depth_sd, "depth").items():
        (tmp_path / name).write_bytes(data)
        for load in (build_from_checkpoint, read_checkpoint):
            _clean(refusal(lambda: load(str(tmp_path / name)), name), name)
    model = build_from_checkpoint(str(tmp_path / "depth_ok.pth"))
    assert model.checkpoint_path.endswith("depth_ok.pth")


def test_code_running_pickles_stay_refused(tmp_path, adapter_sd):
    bad = tmp_path / "code.bin"
    torch.save({**adapter_sd, "obj": logging.getLogger("x")}, bad)
    for load in (BokehAdapter.from_file, build_from_checkpoint):
        msg = _clean(refusal(lambda: load(str(bad)), "code.bin", "weights-only", "code"), "code.bin")
        assert "damaged" not in msg


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_adapter_weights_are_refused(tmp_path, adapter_sd, value):
    key = next(k for k in adapter_sd if k.endswith("to_v_dof.up.weight"))
    sd = dict(adapter_sd, **{key: adapter_sd[key].clone()})
    sd[key][0, 0] = value
    save_file(sd, str(tmp_path / "bad.safetensors"))
    torch.save(sd, tmp_path / "bad.bin")
    for name in ("bad.safetensors", "bad.bin"):
        msg = refusal(lambda: BokehAdapter.from_file(str(tmp_path / name)), name, "NaN or infinite", key)
        _clean(msg, name)
        attached = BokehAdapter.attach(tiny_transformer(), rank=2, alpha=2)
        before = {k: v.clone() for k, v in attached.state_dict().items()}
        refusal(lambda: attached.load(str(tmp_path / name)), name, "NaN or infinite")
        assert all(torch.equal(before[k], v) for k, v in attached.state_dict().items()), "weights kept on refusal"
        attached.detach()


def test_non_finite_depth_weights_are_refused(tmp_path, depth_sd):
    key = "pixel_decoder.depth_layer.to_depth_lr.weight"
    sd = dict(depth_sd, **{key: depth_sd[key].clone()})
    sd[key].view(-1)[3] = math.nan
    torch.save({"model": sd}, tmp_path / "nan.pth")
    save_file(sd, str(tmp_path / "nan.safetensors"))
    for name in ("nan.pth", "nan.safetensors"):
        _clean(refusal(lambda: build_from_checkpoint(str(tmp_path / name)), name, "NaN or infinite", key), name)
    model = build_unidepthv2_dsfa(UNIDEPTH_SMALL)
    refusal(lambda: load_dsfa_checkpoint(model, str(tmp_path / "nan.pth")), "nan.pth", key)
    refusal(lambda: load_dsfa_checkpoint(model, sd), "NaN or infinite", key)
    # the release's EMA overlay is what gets loaded: a NaN there is refused too
    names = list(depth_sd)
    shadow = [depth_sd[k].clone() for k in names]
    shadow[names.index(key)].view(-1)[0] = math.inf
    torch.save({"model": depth_sd, "ema": {"shadow_params": shadow}}, tmp_path / "ema.pth")
    _clean(refusal(lambda: build_from_checkpoint(str(tmp_path / "ema.pth")), "ema.pth", key), "ema.pth")


def test_cli_eval_with_a_damaged_model_is_one_line(tmp_path, depth_sd, capsys):
    save_file(depth_sd, str(tmp_path / "ok.safetensors"))
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 3])
    (tmp_path / "m.jsonl").write_text('{"id": "a", "image": "a.png", "depth": "a.npy"}\n')
    code = cli.main(["eval", "--model", str(tmp_path / "cut.safetensors"), "--data", str(tmp_path / "m.jsonl"),
                     "--stack", "none", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    _clean(err, "cut.safetensors")


def test_damaged_kontext_folder(tmp_path):
    """A FLUX.1-Kontext diffusers folder with a cut weight shard: the folder's name, the damaged file
    within it and the fix, not diffusers' text with the machine's paths."""
    from bokehdepth_core.stage1 import load_kontext_pipeline
    from bokehdepth_core.testing import tiny_kontext_pipeline

    folder = tmp_path / "kontext"
    tiny_kontext_pipeline().save_pretrained(str(folder))
    shard = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    shard.write_bytes(shard.read_bytes()[:1000])
    msg = refusal(lambda: load_kontext_pipeline(str(folder), dtype=torch.float32, device="cpu"),
                  "'kontext'", "transformer/diffusion_pytorch_model.safetensors", "damaged", "again")
    assert str(tmp_path) not in msg and "Unable to load" not in msg, msg
    shard.unlink()
    msg = refusal(lambda: load_kontext_pipeline(str(folder), dtype=torch.float32, device="cpu"),
                  "'kontext'", "incomplete", "transformer", "again")
    assert str(tmp_path) not in msg, msg
