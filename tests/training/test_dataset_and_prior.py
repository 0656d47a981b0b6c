"""`stylecodes dataset` folders (imagefolder, resumable) and the learned prior for random codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stylecodes.cli import main
from stylecodes.codec import dequantize, quantize
from stylecodes.prior import NoPriorError, sample_codes, sample_latents
from stylecodes.training.data import DatasetError, TripleColumns, TripleDataset, open_dataset
from stylecodes.training.dataset import METADATA, rows_written
from stylecodes.training.prior import fit_prior, nearest_distances


def test_dataset_command_writes_an_imagefolder_and_resumes(tmp_path, capsys):
    folder = tmp_path / "set"
    assert main(["dataset", str(folder), "--count", "5", "--batch-size", "2"]) == 0
    assert "5 rows (5 new" in capsys.readouterr().out
    with (folder / METADATA).open("a") as metadata:
        metadata.write('{"file_name": "images/000005.png", "sty')  # a crash in the middle of a line
    assert rows_written(folder) == 5  # the torn line is dropped
    assert main(["dataset", str(folder), "--count", "7"]) == 0
    assert "7 rows (2 new, 5 already there)" in capsys.readouterr().out
    rows = [json.loads(line) for line in (folder / METADATA).read_text().splitlines()]
    assert [row["file_name"] for row in rows] == [f"images/{i:06d}.png" for i in range(7)]
    dataset = open_dataset(str(folder))  # through datasets' imagefolder: columns image, style_image, text
    assert isinstance(dataset, TripleDataset) and len(dataset) == 7
    triple = dataset[6]
    assert triple.image.size == (64, 64) and triple.text == rows[6]["text"]


def test_datasets_without_the_columns_or_metadata_are_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"no metadata\.jsonl"):
        open_dataset(str(tmp_path))
    assert main(["dataset", str(tmp_path / "set"), "--count", "2"]) == 0
    with pytest.raises(DatasetError, match=r"no column 'caption'.*--text-column"):
        open_dataset(str(tmp_path / "set"), TripleColumns(text="caption"))


def test_prior_samples_lie_near_real_codes_uniform_ones_do_not():
    rng = np.random.default_rng(0)
    centres = rng.uniform(-0.6, 0.6, size=(5, 20))
    real = np.concatenate([c + rng.normal(0, 0.08, size=(80, 20)) for c in centres])  # (400, 20)
    rng.shuffle(real)
    train, held_out = real[:360], real[360:]
    prior = fit_prior(train)
    assert 1 < prior["components"] <= 16
    weights, means = np.asarray(prior["weights"]), np.asarray(prior["means"])
    drawn = np.stack([rng.multivariate_normal(means[c], np.asarray(prior["covariances"])[c])
                      for c in rng.choice(len(weights), 200, p=weights)])
    quantized = np.stack([dequantize(quantize(x.astype(np.float32))) for x in drawn])
    uniform = dequantize(rng.integers(0, 64, size=(200, 20)))
    assert nearest_distances(quantized, held_out).mean() < 0.5 * nearest_distances(uniform, held_out).mean()


def test_demo_ships_a_prior_and_random_draws_from_it(capsys):
    codes = sample_codes(0, 3, np.random.default_rng(1))
    assert [c.version for c in codes] == [0, 0, 0]
    assert sample_codes(0, 3, np.random.default_rng(1)) == codes  # seeded: reproducible
    assert sample_latents(0, 4, np.random.default_rng(2)).shape == (4, 20)
    with pytest.raises(NoPriorError, match="no learned prior"):
        sample_latents(1, 1, np.random.default_rng(0))
    assert main(["random", "--model-version", "0", "--seed", "1", "--count", "3"]) == 0
    assert capsys.readouterr().out.split() == [c.canonical for c in codes]
    assert main(["random", "--model-version", "1", "--seed", "1"]) == 0  # no prior: uniform, with a note
    assert "ships no learned prior" in capsys.readouterr().err
