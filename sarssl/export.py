"""Shareable encoders: a pretraining run as a model folder that timm and the Hugging Face Hub understand.

``sarssl export RUN OUT`` (:func:`export_run`) writes into ``OUT``:

- ``model.safetensors``: the encoder-only state dict with timm key names (the run's ``encoder.pth``);
- ``config.json``: timm's model config -- ``architecture``, ``num_classes: 0``, ``model_args`` (``in_chans``,
  ``img_size``, ``patch_size``) and ``pretrained_cfg`` (``input_size``, per-channel ``mean``/``std`` in dB
  from the run's fitted normalisation, and in ``notes`` the channel names and order, the units and the
  M3LEO uint8 decoding) -- plus an ``sarssl_input`` block holding the same input contract as data
  (channel names, units, mean/std, decoding, no-data rule) and ``sarssl_run`` (method, the run's saved
  configuration from ``run.json``, the last metrics row);
- ``README.md``: a model card (method, data, configuration, metrics, how to load, licence and citation).

Load it offline with timm's local-folder source::

    import timm
    model = timm.create_model("local-dir:OUT", pretrained=True)   # 12 channels, num_classes=0, weights loaded

and, once pushed (``--hub-repo NAME``, :func:`push_to_hub`), with ``timm.create_model("hf-hub:NAME",
pretrained=True)``. The input is the 12 channels of :data:`sarssl.data.products.INPUT_CHANNELS` in dB,
normalised as ``(x - mean) / std`` per channel, with no-data pixels set to 0 after normalisation.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from sarssl.data.products import INPUT_CHANNELS, S1_DB_MIN, S1_DB_RANGE, S1_NODATA
from sarssl.errors import UserError

__all__ = ["export_run", "push_to_hub", "find_run_normalization", "MODEL_FILES", "INPUT_DECODING"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
MODEL_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)

#: how the study's input is stored in M3LEO (s1grd-<year> GeoTIFFs): uint8 codes, 0 = no-data
INPUT_DECODING = {
    "product": "s1grd-<year>",
    "dtype": "uint8",
    "formula": "dB = v * 30 / 255 - 30",
    "scale": S1_DB_RANGE / 255.0,
    "offset": S1_DB_MIN,
    "nodata_code": S1_NODATA,
    "channels_from_bands": "vv-vh = vv - vh (dB difference), ascending pass; seasons winter, spring, summer, fall",
}
METHOD_TEXT = {
    "mae": "a masked autoencoder (MAE; He et al., 2022): reconstruction of masked patches from the visible ones",
    "dino": "self-distillation with no labels (DINO; Caron et al., 2021): a student matching an EMA teacher across multi-crop views",
}
CITATION = """```bibtex
@misc{allen2023sslsar,
  title  = {Self-Supervised Learning for {SAR}: Benchmarking Datasets \\& Performance on Diverse Downstream Tasks},
  author = {Allen, Matt and Dorr, Francisco and Gallego-Mejia, Joseph A. and Mart{\\'i}nez-Ferrer, Laura and
            Jungbluth, Anna and Kalaitzis, Freddie and Ramos-Poll{\\'a}n, Ra{\\'u}l},
  year   = {2023},
  note   = {Workshop paper, FDL Europe / Trillium Technologies}
}
@misc{allen2024m3leo,
  title         = {{M3LEO}: A Multi-Modal, Multi-Label Earth Observation Dataset Integrating Interferometric {SAR}
                   and Multispectral Data},
  author        = {Allen, Matthew J. and Dorr, Francisco and Gallego-Mejia, Joseph A. and Mart{\\'i}nez-Ferrer, Laura
                   and Jungbluth, Anna and Kalaitzis, Freddie and Ramos-Poll{\\'a}n, Ra{\\'u}l},
  year          = {2024},
  eprint        = {2406.04230},
  archiveprefix = {arXiv}
}
```"""


# --------------------------------------------------------------------------------------------
# reading a run folder
# --------------------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist: is {str(path.parent)!r} a sarssl pretraining run "
                                "(encoder.pth, encoder.json, run.json)?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {str(path)!r} is not valid JSON: {e}") from e


def _last_metrics(run_dir: Path) -> dict:
    """The last row of ``metrics.csv`` as a dict (numbers as floats where they parse), or {}."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    out = {}
    for k, v in rows[-1].items():
        if k is None or v in (None, ""):
            continue
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def _find_key(obj, name: str):
    """First value of key ``name`` anywhere in a nested dict/list (the run's saved configuration)."""
    if isinstance(obj, dict):
        if name in obj:
            return obj[name]
        for v in obj.values():
            found = _find_key(v, name)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = _find_key(v, name)
            if found is not None:
                return found
    return None


def _norm_tiles(run: dict) -> int | None:
    found = _find_key(run, "norm_tiles")
    if found is not None:
        return int(found)
    try:
        from sarssl.profiles import get_profile

        profile = _find_key(run, "profile")
        return int(get_profile(profile if isinstance(profile, str) else profile["name"]).data.norm_tiles)
    except (KeyError, ValueError, TypeError):
        return None


def find_run_normalization(run_dir, run: dict | None = None):
    """The :class:`~sarssl.data.transforms.Normalization` a pretraining run's data used.

    In order: a ``normalization.json`` in the run folder; the workspace cache file fitted for the run's
    data (``<workspace>/norm/norm_<hash>.json``, keyed by the data root, AOIs, S1 product, channels, tile
    count and seed saved in ``run.json`` (its labelled AOIs when it lists them) and the data's content,
    :func:`sarssl.data.datasets.normalization_key`); a cached file whose key matches the root, AOIs, product,
    channels and seed; else
    the fit repeated on the run's data (deterministic: the same train tiles, the same statistics) when
    the data folder still exists. Raises ``FileNotFoundError`` saying to pass ``--normalization``.
    """
    from sarssl.data.datasets import default_cache_root
    from sarssl.data.transforms import Normalization, norm_key_hash

    run_dir = Path(run_dir)
    for name in ("normalization.json", "norm.json"):
        if (run_dir / name).is_file():
            return Normalization.load(run_dir / name)
    run = run if run is not None else _read_json(run_dir / "run.json", "run record")
    data_root = _find_key(run, "data_root")
    aois = _find_key(run, "labelled_aois") or _find_key(run, "aois")  # the normalisation's AOIs
    aois = [aois] if isinstance(aois, str) else aois
    seed = int(_find_key(run, "seed") or 0)
    product = _find_key(run, "s1_product") or "s1grd-2020"
    tiles = _norm_tiles(run)
    hint = "pass the normalisation JSON the run used with --normalization"
    if not data_root or not aois:
        raise FileNotFoundError(f"run.json of {str(run_dir)!r} names no data_root/aois: {hint}")
    base = {"root": str(Path(data_root).resolve()), "aois": sorted(aois), "product": product,
            "channels": list(INPUT_CHANNELS), "seed": seed}
    folder = default_cache_root() / "norm"
    if tiles is not None and Path(data_root).is_dir():  # the key holds the data's content (split files, chip stats)
        from sarssl.data.datasets import normalization_key

        key = normalization_key((data_root, aois), product, INPUT_CHANNELS, tiles, seed)
        path = folder / f"norm_{norm_key_hash(key)}.json"
        if path.is_file():
            norm = Normalization.load(path)
            if norm.key == json.loads(json.dumps(key)):
                return norm
    matches = []
    for path in sorted(folder.glob("norm_*.json")) if folder.is_dir() else []:
        try:
            norm = Normalization.load(path)
        except Exception:  # noqa: BLE001 - unrelated or damaged cache files are not ours to judge
            continue
        if {k: (norm.key or {}).get(k) for k in base} == json.loads(json.dumps(base)):
            matches.append(norm)
    if len(matches) == 1:
        return matches[0]
    if Path(data_root).is_dir() and tiles is not None:
        from sarssl.data.datasets import M3LEODataset

        ds = M3LEODataset(data_root, aois, split="train", products=(product,), normalization="fit",
                          norm_tiles=tiles, seed=seed, progress=False)
        return ds.norm
    why = (f"{len(matches)} cached normalisations match" if matches else
           f"no cached normalisation under {str(folder)!r} and the data folder {data_root!r} is not there")
    raise FileNotFoundError(f"cannot find the normalisation of run {str(run_dir)!r} ({why}): {hint}")


def _data_text(run: dict) -> str:
    root, aois = _find_key(run, "data_root"), _find_key(run, "aois") or []
    aois = [aois] if isinstance(aois, str) else aois
    simulated = bool(root) and any((Path(root) / a / "simulation.json").is_file() for a in aois)
    where = ", ".join(aois) or "unknown AOIs"
    if simulated:
        return (f"a **simulated** Sentinel-1 region written by `sarssl.data.simulate` in the M3LEO layout (AOI(s) "
                f"{where}): physically modelled backscatter with speckle, not real data. Use it to test pipelines, "
                "not as a pretrained SAR encoder.")
    return (f"M3LEO (Allen et al., 2024) AOI(s) {where}: Sentinel-1 GRD seasonal median composites (`s1grd-<year>`), "
            "ascending pass.")


# --------------------------------------------------------------------------------------------
# the export
# --------------------------------------------------------------------------------------------
def _model_card(method: str, spec: dict, num_features: int, norm, run: dict, metrics: dict, repo_hint: str) -> str:
    name = spec["name"]
    img, patch = int(spec["img_size"]), int(spec["patch_size"])
    rows = "\n".join(f"| {i} | `{c}` | {m:.4f} | {s:.4f} |"
                     for i, (c, m, s) in enumerate(zip(norm.channels, norm.mean.tolist(), norm.std.tolist())))
    metric_rows = "\n".join(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
                            for k, v in metrics.items()) or "| (no metrics.csv in the run) | |"
    method_text = METHOD_TEXT.get(method, method)
    return f"""---
library_name: timm
license: mit
pipeline_tag: image-feature-extraction
tags:
- timm
- image-feature-extraction
- sar
- sentinel-1
- self-supervised
- {method}
- m3leo
- sarssl
---

# {method.upper()} {name} encoder for 12-channel Sentinel-1 composites (sarssl)

A timm `VisionTransformer` (`{name}`, patch {patch}, {img}x{img} px, {num_features}-dimensional CLS features,
no classifier: `num_classes=0`) pretrained with {method_text}, exported from a `sarssl` pretraining run.

## Load it

```python
import timm
model = timm.create_model("local-dir:/path/to/this/folder", pretrained=True)  # offline, from this folder
model = timm.create_model("hf-hub:{repo_hint}", pretrained=True)            # from the Hub
features = model(x)  # x: (B, 12, {img}, {img}) normalised as below -> (B, {num_features})
```

## Input

12 channels of Sentinel-1 sigma0 in **dB**, in this order, each normalised as `(x - mean) / std`
(the `mean`/`std` of `config.json`'s `pretrained_cfg`, in dB); **no-data pixels are set to 0 after
normalisation**.

| index | channel | mean (dB) | std (dB) |
|---:|---|---:|---:|
{rows}

`vv-vh` is the dB difference VV - VH; seasons are winter, spring, summer, fall; ascending passes.
From an M3LEO `s1grd-<year>` GeoTIFF (uint8 codes): **dB = v * 30 / 255 - 30, and v = 0 is no-data**.
`config.json` holds the same contract as data under `sarssl_input`.

## Training

- Method: {method_text}.
- Data: {_data_text(run)}
- Normalisation fitted on: `{json.dumps(norm.key, sort_keys=True)}`

The run's saved configuration (`run.json`):

```json
{json.dumps(run, indent=2, sort_keys=True, default=str)}
```

## Metrics (last row of the run's `metrics.csv`)

| metric | value |
|---|---:|
{metric_rows}

## Licence

The weights are released under the MIT licence of the `sarssl` code. Check the licence of the training
data (the M3LEO dataset cards); contains modified Copernicus Sentinel data.

## Citation

{CITATION}
"""


def export_run(run_dir, out_dir, normalization=None, overwrite: bool = False, repo_hint: str | None = None) -> Path:
    """Write a pretraining run's encoder as ``model.safetensors`` + ``config.json`` + ``README.md`` in ``out_dir``.

    Args:
        run_dir: the run folder (``encoder.pth``, ``encoder.json``, ``run.json``; ``metrics.csv`` if present).
        out_dir: the model folder to write (created).
        normalization: the :class:`~sarssl.data.transforms.Normalization` or a JSON path of the one the run's
            data used; None finds it (:func:`find_run_normalization`).
        overwrite: replace the files of an earlier export in ``out_dir``.
        repo_hint: the Hub repository name shown in the model card's loading snippet.

    Returns:
        ``out_dir``. The weights load with ``timm.create_model("local-dir:<out_dir>", pretrained=True)``.
    """
    import safetensors.torch
    import timm
    import torch

    from sarssl.data.transforms import Normalization

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    spec = _read_json(run_dir / "encoder.json", "encoder spec")
    run = _read_json(run_dir / "run.json", "run record")
    weights = run_dir / "encoder.pth"
    if not weights.is_file():
        raise FileNotFoundError(f"encoder weights {str(weights)!r} do not exist: has the run finished an epoch?")
    missing = [k for k in ("name", "img_size", "patch_size") if k not in spec]
    if missing:
        raise UserError(f"encoder spec {str(run_dir / 'encoder.json')!r} lacks {missing}")
    in_chans = int(spec.get("in_chans", len(INPUT_CHANNELS)))
    if isinstance(normalization, (str, Path)):
        norm = Normalization.load(normalization)
    elif normalization is None:
        norm = find_run_normalization(run_dir, run)
    else:
        norm = normalization
    if len(norm.channels) != in_chans:
        raise UserError(f"normalisation has {len(norm.channels)} channels {list(norm.channels)} but the encoder "
                         f"takes in_chans={in_chans}")
    if out_dir.exists() and any((out_dir / f).exists() for f in MODEL_FILES) and not overwrite:
        raise FileExistsError(f"{str(out_dir)!r} already holds an export ({', '.join(MODEL_FILES)}): "
                              "pass overwrite=True (--overwrite) to replace it")

    state = torch.load(weights, map_location="cpu", weights_only=True)
    model_args = {"in_chans": in_chans, "img_size": int(spec["img_size"]), "patch_size": int(spec["patch_size"])}
    model = timm.create_model(spec["name"], pretrained=False, num_classes=0, **model_args)
    model.load_state_dict(state, strict=True)  # the weights are what the spec says (clear error if not)
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}

    method = str(_find_key(run, "method") or "unknown")
    metrics = _last_metrics(run_dir)
    img = model_args["img_size"]
    channels = list(norm.channels)
    notes = [
        f"input channels in order: {', '.join(channels)}",
        "units: sigma0 in dB; mean and std are in dB; normalise as (x - mean) / std per channel",
        "no-data pixels are set to 0 after normalisation",
        f"M3LEO {INPUT_DECODING['product']} GeoTIFFs store uint8 codes v: {INPUT_DECODING['formula']}; v = 0 is no-data",
        "vv-vh is the dB difference VV - VH; seasons winter, spring, summer, fall; ascending pass",
    ]
    config = {
        "architecture": spec["name"],
        "num_classes": 0,
        "num_features": int(model.num_features),
        "global_pool": str(model.global_pool),
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": f"sarssl_{method}",
            "custom_load": False,
            "input_size": [in_chans, img, img],
            "fixed_input_size": True,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": [float(x) for x in norm.mean.tolist()],
            "std": [float(x) for x in norm.std.tolist()],
            "num_classes": 0,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
            "license": "mit",
            "description": f"{method.upper()}-pretrained {spec['name']} encoder for 12-channel Sentinel-1 "
                           "seasonal composites in dB (sarssl)",
            "paper_name": "Self-Supervised Learning for SAR: Benchmarking Datasets & Performance on Diverse "
                          "Downstream Tasks",
            "notes": notes,
        },
        "sarssl_input": {
            "channels": channels,
            "units": "dB",
            "mean": [float(x) for x in norm.mean.tolist()],
            "std": [float(x) for x in norm.std.tolist()],
            "normalization": "(x - mean) / std per channel; no-data pixels 0 after normalisation",
            "nodata_value_after_normalization": 0.0,
            "decoding": INPUT_DECODING,
            "normalization_key": norm.key,
        },
        "sarssl_run": {"method": method, "run": run, "metrics_last_row": metrics},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(state, str(out_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    os.chmod(out_dir / WEIGHTS_NAME, 0o644)  # shareable, like the other two files
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=str) + "\n")
    card = _model_card(method, spec, int(model.num_features), norm, run, metrics, repo_hint or "OWNER/NAME")
    (out_dir / CARD_NAME).write_text(card)
    return out_dir


# --------------------------------------------------------------------------------------------
# the Hub
# --------------------------------------------------------------------------------------------
def _token(token: str | None) -> str | None:
    if token:
        return token
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - no stored token
        return None


def push_to_hub(folder, repo_id: str, token: str | None = None, private: bool = False,
                commit_message: str = "sarssl export") -> str:
    """Upload an exported model folder to the Hub model repository ``repo_id`` (created if needed).

    The token comes from ``token``, ``$HF_TOKEN`` or the one ``huggingface-cli login`` stored; with none, a
    :class:`~sarssl.errors.UserError` says so in one line. Returns the repository URL.
    """
    folder = Path(folder)
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{str(folder)!r} is not an export (missing {missing}): run `sarssl export` first")
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"--hub-repo must be 'owner/name', got {repo_id!r}")
    tok = _token(token)
    if not tok:
        raise UserError("no Hugging Face token: run `huggingface-cli login` or set HF_TOKEN, then push again")
    from huggingface_hub import HfApi

    api = HfApi(token=tok)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message,
                      allow_patterns=list(MODEL_FILES))
    return f"https://huggingface.co/{repo_id}"
