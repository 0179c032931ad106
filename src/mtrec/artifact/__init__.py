"""The saved model directory: safetensors and JSON, written atomically, loaded without pickle.

Layout (``FORMAT_VERSION`` 1)::

    config.json        format version, model, training and ranking-stage config, data and
                       split, rating scale (``mtrec train --config`` takes it back)
    vocab.json         user and item ids in row order
    model.safetensors  the model's weights
    items.json         titles, genres and years per item row
    seen.safetensors   each user's training items (CSR) and per-item popularity
    metrics.json       evaluation on the held-out split, training history
    index/             the retrieval index (index.json + its files)
    ranker.json        the ranking stage's weights and config (models trained with one)
    item_item.safetensors  its item-item (EASE) weights, where the catalogue allows them
    manifest.json      SHA-256 of every file above; written last

The directory is assembled under a temporary name beside the target and swapped into
place in one atomic exchange (Linux; two renames elsewhere), so the directory always
holds a whole model and a crash never leaves one that loads half. Loading reads each
file once, checks the format version and every file against the manifest, parses what
it checked, and names the file that is missing or corrupt.

``model_dir`` (what a directory holds), ``write`` (``save``), ``read`` (``load``).
"""

from mtrec.artifact.model_dir import FILES, FORMAT_VERSION, ItemInfo, SavedModel
from mtrec.artifact.read import load
from mtrec.artifact.write import check_target, config_document, save

__all__ = [
    "FILES", "FORMAT_VERSION", "ItemInfo", "SavedModel", "check_target", "config_document", "load",
    "save",
]  # fmt: skip
