"""Property-based fuzzing of every input parser: parse, or raise mtrec's own error. Nothing else.

Budgets come from the hypothesis profile (conftest.py): "ci" by default, "long" for a
deeper run (HYPOTHESIS_PROFILE=long).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import planted_ratings, write_grouplens

from mtrec import artifact
from mtrec.cli.saved import parse_history
from mtrec.config import ModelConfig, RankerConfig, RunConfig, TrainConfig
from mtrec.config.run import DATA_KEYS
from mtrec.data.files import load_interactions
from mtrec.data.movielens import parse_recbole, read_cache, read_grouplens_dir
from mtrec.data.releases import GENRES, RELEASES, parse_grouplens, parse_release
from mtrec.errors import MtrecError
from mtrec.train.checkpoint import read_checkpoint
from mtrec.vocab import Vocab

# Text that looks like the formats (digits, separators, newlines) reaches deeper than noise.
FIELD = st.one_of(
    st.integers(-3, 2_000_000_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(alphabet=st.characters(codec="latin-1"), max_size=12),
    st.sampled_from(["", " ", "5", "1", "0", "x", "01-Jan-1995", "Action", "M", "F"]),
)


def lines(sep: str, max_fields: int) -> st.SearchStrategy[str]:
    row = st.lists(FIELD, min_size=0, max_size=max_fields).map(sep.join)
    return st.lists(row, max_size=8).map("\n".join)


ANY_TEXT = st.one_of(
    st.binary(max_size=400).map(lambda b: b.decode("latin-1")), st.text(max_size=200)
)
VALID = {
    "u.data": "1\t1\t5\t881250949\n2\t1\t3\t881250950\n",
    "u.item": "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(["0"] * 18 + ["1"]) + "\n",
    "u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n",
}


def _parses_or_mtrec_error(fn, *args) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(MtrecError):
        fn(*args)


@given(
    name=st.sampled_from(sorted(VALID)), text=st.one_of(ANY_TEXT, lines("\t", 5), lines("|", 25))
)
def test_grouplens_files(name: str, text: str) -> None:
    _parses_or_mtrec_error(parse_grouplens, {**VALID, name: text}, "fuzz")


@given(raw=st.binary(max_size=600))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_grouplens_directory_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for name, text in VALID.items():
            (directory / name).write_text(text)
        (directory / "u.data").write_bytes(raw)
        _parses_or_mtrec_error(read_grouplens_dir, directory)


RECBOLE_VALID = {
    "ml-100k.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t1\t5\t881250949\n",
    "ml-100k.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Comedy\n",
    "ml-100k.user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "1\t24\tM\ttechnician\t85711\n",
}


@given(name=st.sampled_from(sorted(RECBOLE_VALID)), text=st.one_of(ANY_TEXT, lines("\t", 6)))
def test_recbole_files(name: str, text: str) -> None:
    _parses_or_mtrec_error(parse_recbole, {**RECBOLE_VALID, name: text}, "fuzz/")


@given(raw=st.binary(max_size=2000))
def test_cache_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.npz"
        path.write_bytes(raw)
        _parses_or_mtrec_error(read_cache, path)


ARRAYS = st.sampled_from(
    [
        np.arange(3),
        np.zeros((2, 2)),
        np.array(["a", "b"]),
        np.array([], dtype=np.int64),
        np.array([True, False]),
        np.arange(3, dtype=np.float32),
        np.zeros((3, 19), dtype=bool),
    ]
)


@given(
    replace=st.dictionaries(
        st.sampled_from(
            ["user", "item", "rating", "titles", "genres", "genre_names", "age", "zip_code"]
        ),
        ARRAYS,
        max_size=3,
    )
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_cache_with_wrong_arrays(replace: dict[str, np.ndarray]) -> None:
    from mtrec.data.cache import _CACHE_KEYS

    with tempfile.TemporaryDirectory() as tmp:
        good = {k: np.arange(2) for k in _CACHE_KEYS}
        good |= {
            "rating": np.ones(2, dtype=np.float32),
            "titles": np.array(["a", "b"]),
            "genres": np.zeros((2, len(GENRES)), dtype=bool),
            "genre_names": np.array(GENRES),
            "gender": np.array(["M", "F"]),
            "occupation": np.array(["x", "y"]),
            "zip_code": np.array(["1", "2"]),
        }
        path = Path(tmp) / "c.npz"
        np.savez(path, **(good | replace))
        _parses_or_mtrec_error(read_cache, path)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
CONFIG_KEYS = sorted({f for cls in (ModelConfig, TrainConfig) for f in cls.__dataclass_fields__})


@given(
    text=st.one_of(
        ANY_TEXT,
        JSON.map(json.dumps),
        st.dictionaries(st.sampled_from(CONFIG_KEYS), JSON, max_size=4).map(json.dumps),
    )
)
def test_config_json(text: str) -> None:
    _parses_or_mtrec_error(ModelConfig.from_json, text)
    _parses_or_mtrec_error(TrainConfig.from_json, text)


@given(data=st.one_of(JSON, st.fixed_dictionaries({"name": JSON, "ids": JSON})))
def test_vocab_json(data: object) -> None:
    _parses_or_mtrec_error(Vocab.from_dict, data)


_MODEL_DIR: Path | None = None


def _model_dir() -> Path:
    """One small saved model, built once for the artifact fuzzing below."""
    global _MODEL_DIR
    if _MODEL_DIR is None:
        from mtrec.pipeline import train_model

        root = Path(tempfile.mkdtemp(prefix="mtrec-fuzz-"))
        dataset = read_grouplens_dir(
            write_grouplens(root / "data", planted_ratings(n_users=12, n_items=10, per_user=5))
        )
        saved = train_model(
            dataset, ModelConfig(embedding_dim=4, head_layers=(4,)), TrainConfig(epochs=1)
        )
        _MODEL_DIR = artifact.save(saved, root / "model")
    return _MODEL_DIR


@given(
    name=st.sampled_from(
        [
            "config.json",
            "vocab.json",
            "items.json",
            "metrics.json",
            "index/index.json",
            "model.safetensors",
            "seen.safetensors",
            "index/embeddings.safetensors",
        ]
    ),
    payload=st.one_of(st.binary(max_size=300), JSON.map(lambda j: json.dumps(j).encode())),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_model_directory_files(name: str, payload: bytes) -> None:
    """Any content in any file (with the manifest updated to match, so the parsers are reached)."""
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "m"
        shutil.copytree(_model_dir(), model)
        (model / name).write_bytes(payload)
        manifest = json.loads((model / "manifest.json").read_text())
        manifest["sha256"][name] = hashlib.sha256(payload).hexdigest()
        (model / "manifest.json").write_text(json.dumps(manifest))
        _parses_or_mtrec_error(artifact.load, model)


@given(raw=st.binary(max_size=500))
def test_checkpoint_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt-e0001-s000000.safetensors"
        path.write_bytes(raw)
        # ValueError is the documented way a bad checkpoint is reported (and then skipped)
        with contextlib.suppress(ValueError):
            read_checkpoint(path)


SMALL_ARRAYS = st.lists(st.integers(-3, 40), max_size=30).map(lambda v: np.array(v, dtype=np.int64))


@given(
    arrays=st.dictionaries(
        st.sampled_from(["indptr", "items", "popularity", "other"]), SMALL_ARRAYS
    )
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_model_seen_arrays(arrays: dict[str, np.ndarray]) -> None:
    """Well-formed safetensors with arrays of any size and values in seen.safetensors."""
    import shutil

    from safetensors.numpy import save

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "m"
        shutil.copytree(_model_dir(), model)
        payload = save(arrays)
        (model / "seen.safetensors").write_bytes(payload)
        manifest = json.loads((model / "manifest.json").read_text())
        manifest["sha256"]["seen.safetensors"] = hashlib.sha256(payload).hexdigest()
        (model / "manifest.json").write_text(json.dumps(manifest))
        _parses_or_mtrec_error(artifact.load, model)


RELEASE_VALID = {
    "ratings.dat": "1::10::5::978300760\n2::10::3::978300761\n",
    "movies.dat": "10::Heat (1995)::Action|Crime\n",
    "users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n",
    "ratings.csv": "userId,movieId,rating,timestamp\n1,10,4.5,978300760\n",
    "movies.csv": 'movieId,title,genres\n10,"Heat, The (1995)",Action\n',
}


@given(
    name=st.sampled_from(sorted(RELEASE_VALID)),
    text=st.one_of(ANY_TEXT, lines("::", 6), lines(",", 6)),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_movielens_release_files(name: str, text: str) -> None:
    release = RELEASES["ml-1m" if name.endswith(".dat") else "ml-25m"]
    files = {k: v.encode("latin-1", "replace") for k, v in RELEASE_VALID.items()}
    files[name] = text.encode("utf-8", "surrogatepass")
    _parses_or_mtrec_error(parse_release, release, files, "fuzz")


CSV_FIELD = st.one_of(FIELD, st.sampled_from(['"a,b"', '"', "nan", "inf", "-1e400", "1e3"]))


@given(
    header=st.sampled_from(
        ["user_id,item_id,rating,timestamp", "user_id,item_id", "user_id,item_id,rating", "a,b"]
    ),
    rows=st.lists(st.lists(CSV_FIELD, min_size=0, max_size=5).map(",".join), max_size=8),
    skip=st.booleans(),
    parquet=st.booleans(),
)
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_users_interaction_files(header: str, rows: list[str], skip: bool, parquet: bool) -> None:
    """Any CSV (and, when pyarrow can read it, the same table as Parquet): a dataset whose
    columns line up, or mtrec's own error."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.csv"
        path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8", errors="replace")
        if parquet:
            import pyarrow.csv as pacsv
            import pyarrow.parquet as pq

            try:
                table = pacsv.read_csv(path)
            except Exception:  # not a table pyarrow can read; the CSV case covers it
                return
            path = path.with_suffix(".parquet")
            pq.write_table(table, path)
        try:
            ds = load_interactions(path, bad_rows="skip" if skip else "error")
        except MtrecError:
            return
        ev = ds.interactions
        assert len(ev.user) == len(ev.item) == len(ev.rating) == len(ev.timestamp) > 0
        assert np.isfinite(ev.rating).all()
        if ev.user_names is not None:
            assert ev.user.min() >= 0 and ev.user.max() < len(ev.user_names)


SECTION_KEYS = {
    "model": sorted(ModelConfig.__dataclass_fields__),
    "train": sorted(TrainConfig.__dataclass_fields__),
    "ranker": sorted(RankerConfig.__dataclass_fields__),
    "data": sorted(DATA_KEYS),
    "index": ["kind", "options"],
}
RUN_CONFIG = st.fixed_dictionaries(
    {},
    optional={
        "preset": st.one_of(st.sampled_from(["default", "tuned", "reference"]), JSON),
        **{
            name: st.one_of(st.dictionaries(st.sampled_from(keys), JSON, max_size=3), JSON)
            for name, keys in SECTION_KEYS.items()
        },
    },
)


def _toml(document: dict[str, object]) -> str:
    """A rough TOML rendering (values as JSON, which TOML mostly reads): near-valid files."""
    top = [f"{k} = {json.dumps(v)}" for k, v in document.items() if not isinstance(v, dict)]
    tables = [
        f"[{k}]\n" + "\n".join(f"{key} = {json.dumps(value)}" for key, value in v.items())
        for k, v in document.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top + tables)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    document=RUN_CONFIG,
    suffix=st.sampled_from([".toml", ".json"]),
    raw=st.one_of(st.none(), ANY_TEXT),
)
def test_run_config_files(document: dict[str, object], suffix: str, raw: str | None) -> None:
    """``mtrec train --config FILE``: read, then resolved into the three configs (where the
    values are checked), or mtrec's own error naming the file or key; never another one."""
    text = (
        raw if raw is not None else (json.dumps(document) if suffix == ".json" else _toml(document))
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"run{suffix}"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        with contextlib.suppress(MtrecError):
            RunConfig.read(path).resolve()
    with contextlib.suppress(MtrecError):
        RunConfig.from_dict(document).resolve()


@given(
    text=st.one_of(
        ANY_TEXT,
        st.lists(st.tuples(FIELD, st.sampled_from(["", ":"]), FIELD).map("".join), max_size=6).map(
            ",".join
        ),
    )
)
def test_history_flag(text: str) -> None:
    """``--history ITEM[:RATING],...``: entries with a finite rating or none, or one
    ``ConfigError`` naming the entry."""
    try:
        entries = parse_history(text)
    except MtrecError as error:
        assert "--history entry" in str(error)
        return
    assert entries and all(item for item, _ in entries)
    assert all(r is None or np.isfinite(r) for _, r in entries)
