"""Separability, plots and the HTML report on the shared test faces embedded with dlib-resnet."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from synthdb.analysis.report import report
from synthdb.analysis.separability import separability
from synthdb.context import Context

GROUPS = {"group_01", "group_02", "group_03", "noface_01"}


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Context:
    from synthdb.admin import init_workspace
    from synthdb.embed_dataset import embed_dataset
    from synthdb.sources.registry import import_named
    from tests.conftest import FACES
    from tests.test_sources import faces_as_imagefolder

    tmp = tmp_path_factory.mktemp("faces")
    faces_as_imagefolder(FACES, tmp / "faces")
    for group in GROUPS:  # group photos and the face-less photo are not identities
        shutil.rmtree(tmp / "faces" / group, ignore_errors=True)
    ctx = init_workspace(tmp / "ws", models_dir=str(tmp / "models"))
    import_named(ctx, "imagefolder", tmp / "faces", name="faces")
    embed_dataset(ctx, "faces", "dlib-resnet", "dlib", unit_size=64, workers=0, quiet=True)
    yield ctx
    ctx.close()


def test_separability_of_the_shared_faces(faces: Context) -> None:
    sep = separability(faces, "faces", quiet=True)
    assert sep.model == "dlib-resnet" and sep.samples == 30
    assert sep.inter_pairs + sep.intra_pairs == 30 * 29 // 2 and sep.intra_pairs > 0
    assert sep.eer is not None and 0 <= sep.eer.fmr < 0.1  # the ordering test of test_embed: >= 95% ordered
    assert 0 < sep.min_inter_rad <= sep.mean_inter_rad and sep.mean_intra_rad < sep.mean_inter_rad
    assert sep.inter.counts.sum() + sep.inter.below + sep.inter.above == sep.inter_pairs
    assert len(sep.spread.identity_ids) == sep.identities and np.all(
        sep.spread.max_rad >= sep.spread.mean_rad
    )
    assert sep.fmr_at_fnmr[0.1].fnmr <= 0.1 and sep.fnmr_at_fmr[0.01].fmr <= 0.01


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHECK_IMAGES = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  document.body.dataset.images = images.length;
  document.body.dataset.broken = images.filter(i => !i.complete || i.naturalWidth === 0).length;
});
</script>"""


def test_report_renders_in_headless_chromium(faces: Context, tmp_path: Path) -> None:
    result = report(faces, "faces", tmp_path / "report", quiet=True)
    page = result.path.read_text()
    names = {f.name for f in result.figures}
    assert {"histogram.png", "histogram.svg", "det.png", "roc.png", "samples.png"} <= names
    assert all(f.stat().st_size > 1000 for f in result.figures)
    for key in ("EER", "min inter-class angle", "mean inter-class angle", "FMR at FNMR 0.01"):
        assert f"<th>{key}</th>" in page and result.numbers[key] in page
    assert "rad" in result.numbers["min inter-class angle"] and "dlib-resnet" in page
    assert "embed" in page and "Public domain" in page  # provenance: the embed run and the model's licence
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): the page itself was checked")
    probe = result.path.with_name("probe.html")
    probe.write_text(page.replace("</body>", CHECK_IMAGES + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    dom = subprocess.run(
        [browser, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    images = re.search(r'data-images="(\d+)"', dom.stdout)
    broken = re.search(r'data-broken="(\d+)"', dom.stdout)
    assert images and broken, dom.stderr[-2000:]
    assert int(images.group(1)) == 4 and int(broken.group(1)) == 0
    assert result.numbers["EER"] in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1200,2400", result.path.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape == (2400, 1200) and pixels.std() > 10  # something was drawn, not a blank page


def test_cli_stats_and_report(faces: Context, tmp_path: Path) -> None:
    import synthdb.cli.analysis_cmds  # noqa: F401 - registers the commands
    from synthdb.cli.app import cli

    ws = ["-w", str(faces.ws.root), "-q"]
    runner = CliRunner()
    dat, png = tmp_path / "h.dat", tmp_path / "h.png"
    out = runner.invoke(
        cli, [*ws, "stats", "histogram", "faces", "--bins", "64", "--export", str(dat), "--plot", str(png)]
    )
    assert out.exit_code == 0, out.output
    assert "rad" in out.output and "inter pairs" in out.output and png.stat().st_size > 1000
    rows = [line for line in dat.read_text().splitlines()]
    assert len(rows) == 64 and all(len(r) == 48 for r in rows)
    sep = runner.invoke(cli, [*ws, "stats", "separability", "faces", "--json"])
    assert sep.exit_code == 0 and '"EER"' in sep.output and "rad" in sep.output
    page = runner.invoke(cli, [*ws, "report", "faces", "--out", str(tmp_path / "r")])
    assert page.exit_code == 0 and (tmp_path / "r" / "index.html").is_file()
    wrong = runner.invoke(cli, [*ws, "stats", "histogram", "faces", "--space", "latent"])
    assert wrong.exit_code == 1 and "latent shards of no model" in wrong.output
