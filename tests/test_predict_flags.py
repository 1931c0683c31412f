"""`predict` checks every image against the weights' input contract (issue 28, item 3)."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner

import lenszoo
from lenszoo.cli import main
from lenszoo.data.nuisance import add_sky, scale_noise

MODEL = ["radial_profile.clean", "--dataset", "B"]  # trained on clean images: a sky residual is out of contract


@pytest.fixture(scope="module")
def lenses():
    from lenszoo.registry import get_dataset

    generator = get_dataset("B")
    return generator.background_noise, np.stack([generator.simulate("test", i)[0] for i in range(45)])


def run(*args):
    return CliRunner().invoke(main, ["predict", *MODEL, *map(str, args), "--quiet", "--workers", "0"])


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_clean_images_pass_and_a_sky_residual_or_doubled_noise_is_flagged(lenses, tmp_path):
    sigma, images = lenses
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "clean.npy", images)
    np.save(folder / "sky.npy", add_sky(images, 3.0, sigma))
    np.save(folder / "noisy.npy", scale_noise(images, 2.0, sigma, np.random.default_rng(0)))
    result = run(folder, "--out", tmp_path / "s.csv")
    assert result.exit_code == 0, result.output
    table = rows(tmp_path / "s.csv")
    flags = {name: [r["flags"] for r in table if r["source"].endswith(name)] for name in ("clean.npy", "sky.npy", "noisy.npy")}
    assert sum(bool(f) for f in flags["clean.npy"]) <= 1
    assert sum("sky" in f.split(";") for f in flags["sky.npy"]) >= 43
    assert sum("noise" in f.split(";") for f in flags["noisy.npy"]) >= 43
    summary = [line for line in result.stderr.splitlines() if line.startswith("flagged ")]
    assert len(summary) == 1 and "sky" in summary[0] and "noise" in summary[0]


def test_strict_skips_flagged_images_and_says_why(lenses, tmp_path):
    sigma, images = lenses
    np.save(tmp_path / "sky.npy", add_sky(images[:6], 3.0, sigma))
    np.save(tmp_path / "clean.npy", images[:6])
    result = run(tmp_path / "sky.npy", tmp_path / "clean.npy", "--out", tmp_path / "s.csv", "--strict")
    assert result.exit_code == 3, result.output
    assert {r["source"].rsplit("/", 1)[-1] for r in rows(tmp_path / "s.csv")} == {"clean.npy"}
    assert "flagged --strict: sky" in result.stderr


def test_a_fits_pixel_scale_other_than_the_models_is_flagged(lenses, tmp_path):
    from astropy.io import fits

    _, images = lenses
    for name, arcsec in (("right.fits", 0.08), ("wrong.fits", 0.101)):
        hdu = fits.PrimaryHDU(images[:3])
        hdu.header["CD1_1"], hdu.header["CD2_2"] = -arcsec / 3600, arcsec / 3600
        hdu.writeto(tmp_path / name)
    result = run(tmp_path / "right.fits", tmp_path / "wrong.fits", "--out", tmp_path / "s.csv")
    assert result.exit_code == 0, result.output
    for row in rows(tmp_path / "s.csv"):
        assert ("pixel_scale" in row["flags"]) == row["source"].endswith("wrong.fits")


def test_a_min_max_scaled_png_is_flagged_as_a_pedestal(lenses, tmp_path):
    from PIL import Image

    _, images = lenses
    image = images[0]
    scaled = np.round((image - image.min()) / (image.max() - image.min()) * 65535).astype(np.uint16)
    Image.fromarray(scaled).save(tmp_path / "minmax.png")
    result = run(tmp_path / "minmax.png", "--out", tmp_path / "s.csv")
    assert result.exit_code == 0, result.output
    assert "pedestal" in rows(tmp_path / "s.csv")[0]["flags"]


def test_the_python_api_flags_arrays_too(lenses):
    sigma, images = lenses
    model = lenszoo.load("radial_profile.clean", dataset="B")
    flagged = [r["flags"] for r in lenszoo.predict(model, add_sky(images[:5], 3.0, sigma))]
    assert all("sky" in f for f in flagged)
    assert [r["flags"] for r in lenszoo.predict(model, images[:5])] == [""] * 5
    with pytest.warns(UserWarning, match="strict"):
        assert lenszoo.predict(model, add_sky(images[:2], 3.0, sigma), strict=True) == []


def test_a_table_from_before_the_flags_column_is_named_as_such(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("source,index,p_no_sub,p_cdm,p_axion,predicted_class,tta,model,model_sha256\n")
    np.save(tmp_path / "x.npy", np.zeros((1, 64, 64), np.float32))
    result = run(tmp_path / "x.npy", "--out", old, "--resume")
    assert result.exit_code == 1 and "earlier lenszoo (without the flags column)" in result.stderr
