"""``synthdb evaluate pairs`` on real photos: an LFW tree (View 1 and the 10 folds of View 2) and an IJB-C
tree of templates built from the test faces, imported by the real importers and embedded with dlib-resnet.

The accuracy is checked against insightface's own procedure written out here the way ``verification.py``
does it (thresholds 0..4 by 0.01 on squared distances, 9 folds train, 1 fold tests), on embeddings read
back through ``synthdb query``; the score files are read by bob itself when ``SYNTHDB_TEST_BOB_PYTHON``
names a Python with ``bob.bio.base`` 8 (``python -m venv /tmp/bob && /tmp/bob/bin/pip install
bob.bio.base==8.* scikit-learn==1.5.2``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from synthdb.analysis.evaluate import evaluate_pairs, far_threshold, tar_at_far
from synthdb.analysis.params import EvaluateParams
from synthdb.analysis.query import query
from synthdb.context import Context
from synthdb.errors import SynthdbError
from tests.conftest import FACES, CliRun

#: LFW names -> the test photos of that person (JPEG only: LFW's keys end in .jpg).
PEOPLE = {
    "Barack_Obama": ["obama_01", "obama_02", "obama_03", "obama_04"],
    "Joe_Biden": ["biden_01", "biden_02"],
    "Rose_Leslie": ["rose_leslie_01", "rose_leslie_02"],
    "Angelina_Jolie": ["angelina_01", "angelina_02", "angelina_03"],
    "Mark_Zuckerberg": ["mark_01", "mark_02", "mark_03"],
    "Elon_Musk": ["elon_01", "elon_02"],
    "Jeff_Bezos": ["jeff_01", "jeff_02"],
    "Sundar_Pichai": ["sundar_01"],
}
FOLDS, PER_FOLD = 10, 2


def lfw_pairs() -> tuple[list[tuple[str, int, str, int]], list[bool]]:
    """10 folds of PER_FOLD matched then PER_FOLD mismatched pairs, drawn with a fixed seed."""
    rng = np.random.default_rng(7)
    names = sorted(PEOPLE)
    matched = [
        (n, a, n, b)
        for n in names
        for a in range(1, len(PEOPLE[n]) + 1)
        for b in range(a + 1, len(PEOPLE[n]) + 1)
    ]
    pairs, same = [], []
    for _ in range(FOLDS):
        for k in rng.choice(len(matched), PER_FOLD, replace=False):
            pairs.append(matched[k])
            same.append(True)
        for _ in range(PER_FOLD):
            a, b = rng.choice(len(names), 2, replace=False)
            first, second = names[a], names[b]
            pairs.append(
                (
                    first,
                    int(rng.integers(len(PEOPLE[first]))) + 1,
                    second,
                    int(rng.integers(len(PEOPLE[second]))) + 1,
                )
            )
            same.append(False)
    return pairs, same


def build_lfw(root: Path) -> None:
    for name, photos in PEOPLE.items():
        (root / name).mkdir(parents=True)
        for n, photo in enumerate(photos, 1):
            shutil.copyfile(FACES / f"{photo}.jpg", root / name / f"{name}_{n:04d}.jpg")
    pairs, same = lfw_pairs()
    lines = [f"{FOLDS} {PER_FOLD}"]
    lines += [
        f"{a} {i} {j}" if s else f"{a} {i} {b} {j}" for (a, i, b, j), s in zip(pairs, same, strict=True)
    ]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    dev = pairs[:2] + pairs[2:4]  # View 1: one matched, one mismatched block
    (root / "pairsDevTest.txt").write_text(
        "2\n"
        + "".join(f"{a} {i} {j}\n" for a, i, _, j in dev[:2])
        + "".join(f"{a} {i} {b} {j}\n" for a, i, b, j in dev[2:])
    )
    (root / "pairsDevTrain.txt").write_text(  # View 1's tuning pairs: left out unless asked for
        "2\n"
        + "".join(f"{a} {i} {j}\n" for a, i, _, j in dev[:2])
        + "".join(f"{a} {i} {b} {j}\n" for a, i, b, j in dev[2:])
    )


IJBC_HEADER = "TEMPLATE_ID,SUBJECT_ID,FILENAME,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT\n"
#: IJB-C test1 from the test faces: enrolled templates of two photos or one, probes of one.
ENROLL = {
    "1": ("10", ["obama_01", "obama_02"]),
    "2": ("11", ["biden_01"]),
    "3": ("12", ["elon_01"]),
}
PROBES = {"101": ("10", "obama_04"), "102": ("11", "biden_02"), "103": ("12", "elon_02")}


def build_ijbc(root: Path) -> None:
    base = root / "IJB-C"
    protocol = base / "protocols" / "test1"
    protocol.mkdir(parents=True)
    (base / "images" / "img").mkdir(parents=True)
    rows = {"enroll_templates.csv": [], "verif_templates.csv": []}
    for template, (subject, photos) in ENROLL.items():
        rows["enroll_templates.csv"] += [(template, subject, photo) for photo in photos]
    for template, (subject, photo) in PROBES.items():
        rows["verif_templates.csv"].append((template, subject, photo))
    for name, listed in rows.items():
        text = "".join(f"{t},{s},img/{p}.jpg,0,0,10,10\n" for t, s, p in listed)
        (protocol / name).write_text(IJBC_HEADER + text)
        for _, _, photo in listed:
            shutil.copyfile(FACES / f"{photo}.jpg", base / "images" / "img" / f"{photo}.jpg")
    (protocol / "match.csv").write_text(
        "ENROLL_TEMPLATE_ID,VERIF_TEMPLATE_ID\n" + "".join(f"{e},{v}\n" for e in ENROLL for v in PROBES)
    )


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Context:
    from synthdb.admin import init_workspace
    from synthdb.embed_dataset import embed_dataset
    from synthdb.sources.registry import import_named

    tmp = tmp_path_factory.mktemp("evaluate")
    build_lfw(tmp / "lfw")
    build_ijbc(tmp / "ijbc")
    ctx = init_workspace(tmp / "ws", models_dir=str(tmp / "models"))
    for source in ("lfw", "ijbc"):
        import_named(ctx, source, tmp / source, name=source)
        embed_dataset(ctx, source, "dlib-resnet", "dlib", unit_size=64, workers=0, quiet=True)
    yield ctx
    ctx.close()


def unit_embeddings(ctx: Context, dataset: str) -> dict[str, np.ndarray]:
    """Each sample's unit embedding by key, read back through DuckDB (not through synthdb's loader)."""
    rows = query(
        ctx,
        f"SELECT s.key, e.embedding FROM embeddings e JOIN catalog.sample s ON s.id = e.sample_id "
        f"WHERE e.dataset = '{dataset}'",
    ).to_pylist()
    out = {}
    for row in rows:
        vector = np.asarray(row["embedding"], np.float64)
        out[row["key"]] = vector / np.linalg.norm(vector)
    return out


def insightface_accuracy(e1: np.ndarray, e2: np.ndarray, same: np.ndarray, folds: int) -> tuple[float, float]:
    """insightface's ``calculate_roc`` accuracy, written out: KFold without shuffling, the threshold with
    the best training accuracy (the first of ties), ``dist < threshold`` is a match."""
    thresholds = np.arange(0, 4, 0.01)
    dist = np.sum(np.square(e1 - e2), 1)
    sizes = np.full(folds, len(same) // folds)
    sizes[: len(same) % folds] += 1
    starts = np.concatenate([[0], np.cumsum(sizes)])
    accuracy = []
    for f in range(folds):
        test = np.zeros(len(same), bool)
        test[starts[f] : starts[f + 1]] = True
        train = ~test
        on_train = [np.mean(np.less(dist[train], t) == same[train]) for t in thresholds]
        best = thresholds[int(np.argmax(on_train))]
        accuracy.append(np.mean(np.less(dist[test], best) == same[test]))
    return float(np.mean(accuracy)), float(np.std(accuracy))


@pytest.mark.slow
def test_lfw_view2_accuracy_is_insightfaces(faces: Context) -> None:
    result = evaluate_pairs(faces, EvaluateParams("lfw", protocol="view2"))
    pairs, same = lfw_pairs()
    unit = unit_embeddings(faces, "lfw")
    e1 = np.array([unit[f"{a}/{a}_{i:04d}.jpg"] for a, i, _, _ in pairs])
    e2 = np.array([unit[f"{b}/{b}_{j:04d}.jpg"] for _, _, b, j in pairs])
    mean, std = insightface_accuracy(e1, e2, np.array(same), FOLDS)
    assert (result.pairs, result.genuine, result.impostor, result.unscored) == (40, 20, 20, 0)
    assert result.model == "dlib-resnet" and len(result.fold_accuracy) == FOLDS
    assert result.accuracy == pytest.approx(mean, abs=1e-12) and result.accuracy_std == pytest.approx(
        std, abs=1e-12
    )
    assert result.accuracy > 0.85  # dlib-resnet tells these people apart
    assert all(0 < t < np.pi for t in result.fold_threshold_rad)
    # TAR at FAR: 20 impostor pairs estimate FAR 0.1 (2 of them), not 0.01
    assert [p.far_target for p in result.tar_at_far] == [0.1] and 0.01 in result.not_estimable
    cosine = np.einsum("ij,ij->i", e1, e2)
    negatives, positives = cosine[~np.array(same)], cosine[np.array(same)]
    point = result.tar_at_far[0]
    threshold = np.cos(point.threshold_rad)
    assert point.far <= 0.1 and point.far == pytest.approx(np.mean(negatives >= threshold - 1e-12))
    assert point.tar == pytest.approx(np.mean(positives >= threshold - 1e-12))


@pytest.mark.slow
def test_protocol_choice_and_view1(faces: Context) -> None:
    with pytest.raises(SynthdbError, match="protocols with pairs: view1, view2; pass one with --protocol"):
        evaluate_pairs(faces, EvaluateParams("lfw"))
    with pytest.raises(SynthdbError, match="4 pairs, fewer than --folds 10"):
        evaluate_pairs(faces, EvaluateParams("lfw", protocol="view1"))
    view1 = evaluate_pairs(faces, EvaluateParams("lfw", protocol="view1", folds=2))
    assert (view1.pairs, view1.genuine, view1.source) == (4, 2, "protocol view1 group test")
    tuning = evaluate_pairs(faces, EvaluateParams("lfw", protocol="view1", group="train", folds=2))
    assert (tuning.pairs, tuning.genuine, tuning.source) == (4, 2, "protocol view1 group train")
    one_fold = evaluate_pairs(faces, EvaluateParams("lfw", protocol="view2", group="fold_03", folds=2))
    assert one_fold.pairs == 4 and one_fold.source == "protocol view2 group fold_03"
    with pytest.raises(SynthdbError, match="has no protocol 'view3' with pairs: use one of view1, view2"):
        evaluate_pairs(faces, EvaluateParams("lfw", protocol="view3"))


@pytest.mark.slow
def test_ijbc_templates_are_mean_unit_embeddings(faces: Context, tmp_path: Path) -> None:
    """Template pairs: each side the normalised mean of its photos' unit embeddings (a variant of pairs
    the report did not name: sets of images, not images)."""
    scores = tmp_path / "ijbc.csv"
    result = evaluate_pairs(faces, EvaluateParams("ijbc", folds=3, scores=str(scores)))
    assert (result.pairs, result.genuine, result.impostor, result.source) == (9, 3, 6, "protocol test1")
    unit = unit_embeddings(faces, "ijbc")

    def template(photos: list[str]) -> np.ndarray:
        mean = np.mean([next(v for k, v in unit.items() if k.startswith(f"img_{p}_")) for p in photos], 0)
        return mean / np.linalg.norm(mean)

    written = [line.split(",") for line in scores.read_text().splitlines()[1:]]
    for (e, v), row in zip([(e, v) for e in ENROLL for v in PROBES], written, strict=True):
        want = float(template(ENROLL[e][1]) @ template([PROBES[v][1]]))
        assert (row[0], row[1], row[2], row[3]) == (e, ENROLL[e][0], v, PROBES[v][0])
        assert float(row[4]) == pytest.approx(want, abs=1e-9)


@pytest.mark.slow
def test_pairs_csv_of_a_pairs_bin_export(faces: Context, tmp_path: Path) -> None:
    """The .bin's own pairs (a sampled pairs-bin export), read back from its pairs.csv, in its order."""
    from synthdb.export.api import export

    export(faces, "lfw", "pairs-bin", tmp_path / "bin", pairs=20, seed=3, size=112, quiet=True)
    listed = (tmp_path / "bin" / "pairs.csv").read_text().splitlines()
    result = evaluate_pairs(faces, EvaluateParams("lfw", pairs_csv=str(tmp_path / "bin" / "pairs.csv")))
    same = [line.split(",")[2] == "1" for line in listed[1:]]
    assert (result.pairs, result.genuine) == (len(same), sum(same)) and result.unscored == 0
    assert result.source == f"pairs.csv ({len(same)} pairs)"


@pytest.mark.slow
def test_hostile_pairs_files_and_outputs_are_one_line(faces: Context, tmp_path: Path) -> None:
    """A pairs.csv naming samples of another dataset, a line without end, an unwritable or folder score
    path, labels a 4-column file cannot hold: each a one-line error naming the file and the fix."""
    ijbc_sample = (
        query(faces, "SELECT min(id) FROM catalog.sample s WHERE s.key LIKE 'img_%'").column(0)[0].as_py()
    )
    foreign = tmp_path / "foreign.csv"
    foreign.write_text(
        f"pair,fold,same,first_sample_id,second_sample_id\n0,0,1,{ijbc_sample},{ijbc_sample}\n"
    )
    long = tmp_path / "long.csv"
    long.write_text("pair,fold,same,first_sample_id,second_sample_id\n" + "1" * 100_000)
    cases = [
        (EvaluateParams("lfw", pairs_csv=str(foreign)), "foreign.csv:2: sample"),
        (EvaluateParams("lfw", pairs_csv=str(long)), "a line is longer than"),
        (EvaluateParams("lfw", pairs_csv=str(tmp_path / "none.csv")), "none.csv is not a file"),
        (
            EvaluateParams("lfw", protocol="view2", scores="/proc/nope/scores.csv"),
            "cannot write /proc/nope/scores.csv",
        ),
        (EvaluateParams("lfw", protocol="view2", scores=str(tmp_path)), "is a folder: pass a file name"),
        (EvaluateParams("lfw", protocol="view2", folds=1), "--folds 1 is outside x >= 2"),
        (EvaluateParams("lfw", protocol="view2", pairs_csv=str(foreign)), "drop --protocol"),
    ]
    for params, words in cases:
        with pytest.raises(SynthdbError) as caught:
            evaluate_pairs(faces, params)
        assert words in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.slow
def test_cli_evaluate_pairs_json_and_four_column_scores(
    faces: Context, tmp_path: Path, synthdb_cli: CliRun
) -> None:

    ws = ["-w", str(faces.ws.root), "-q"]
    out = synthdb_cli(
        *ws, "evaluate", "pairs", "lfw", "--protocol", "view2", "--scores", str(tmp_path / "s.txt")
    )
    assert out.exit_code == 0, out.output
    assert (
        "40 of protocol view2 (20 genuine, 20 impostor)" in out.output and "accuracy (10 folds)" in out.output
    )
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert len(lines) == 40 and all(len(line.split()) == 4 for line in lines)
    data = json.loads(synthdb_cli(*ws, "evaluate", "pairs", "lfw", "--protocol", "view2", "--json").output)
    assert set(data) >= {"accuracy", "accuracy_std", "fold_threshold_rad", "tar_at_far", "not_estimable"}
    assert isinstance(data["accuracy"], float) and data["tar_at_far"][0]["far_target"] == 0.1
    bad = synthdb_cli(*ws, "evaluate", "pairs", "lfw", "--folds", "0")
    assert bad.exit_code == 2 and "0 is outside x >= 2" in bad.output


def test_far_threshold_is_bobs_rule_with_ties() -> None:
    """The lowest impostor score at which at most the target fraction is at or above it, ties included."""
    negatives = np.array([0.1, 0.5, 0.5, 0.5, 0.2, 0.9, 0.3, 0.3, 0.7, 0.6])
    assert far_threshold(negatives, 0.1) == 0.9
    assert far_threshold(negatives, 0.3) == 0.6  # 0.5 would accept 6 of 10
    assert far_threshold(negatives, 0.6) == 0.5
    assert far_threshold(negatives, 0.05) == np.nextafter(0.9, 1)  # none may be accepted
    points, not_estimable = tar_at_far(negatives, np.array([0.95, 0.55, 0.65]), (0.3, 0.01))
    assert not_estimable == [0.01] and points[0].far == 0.3 and points[0].tar == pytest.approx(2 / 3)


BOB_PYTHON = os.environ.get("SYNTHDB_TEST_BOB_PYTHON")
BOB_CHECK = """
import json, sys
import numpy
from bob.bio.base.score.load import split
from bob.measure import far_threshold, farfrr
out = {}
for path in sys.argv[1:]:
    neg, pos = split(path)
    t = far_threshold(neg, pos, 0.1)
    far, frr = farfrr(neg, pos, t)
    out[path] = {"neg": sorted(map(float, neg)), "pos": sorted(map(float, pos)), "tar": 1 - frr, "far": far}
print(json.dumps(out))
"""


@pytest.mark.skipif(not BOB_PYTHON, reason="SYNTHDB_TEST_BOB_PYTHON names no Python with bob.bio.base 8")
@pytest.mark.slow
def test_bob_reads_both_score_files(faces: Context, tmp_path: Path) -> None:
    """bob.bio.base 8 reads the CSV and the 4-column score files into the same genuine and impostor scores,
    and bob.measure's TAR at FAR 0.1 is ours."""
    result = None
    paths = [tmp_path / "scores.csv", tmp_path / "scores.txt"]
    for path in paths:
        result = evaluate_pairs(faces, EvaluateParams("lfw", protocol="view2", scores=str(path)))
    read = subprocess.run(
        [BOB_PYTHON, "-c", BOB_CHECK, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    by_bob = json.loads(read.stdout)
    pairs, same = lfw_pairs()
    unit = unit_embeddings(faces, "lfw")
    cosine = np.array([unit[f"{a}/{a}_{i:04d}.jpg"] @ unit[f"{b}/{b}_{j:04d}.jpg"] for a, i, b, j in pairs])
    flags = np.array(same)
    for path in paths:
        seen = by_bob[str(path)]
        assert np.allclose(seen["pos"], np.sort(cosine[flags]), atol=1e-12)
        assert np.allclose(seen["neg"], np.sort(cosine[~flags]), atol=1e-12)
        assert (seen["tar"], seen["far"]) == (result.tar_at_far[0].tar, result.tar_at_far[0].far)


BOB_THRESHOLDS = """
import json, sys
import numpy
from bob.measure import far_threshold
cases = json.load(sys.stdin)
print(json.dumps([far_threshold(numpy.array(neg), numpy.array([]), far) for neg, far in cases]))
"""


@pytest.mark.skipif(not BOB_PYTHON, reason="SYNTHDB_TEST_BOB_PYTHON names no Python with bob.bio.base 8")
def test_far_threshold_equals_bob_measure() -> None:
    """Scores with many ties (rounded to 2 decimals) at FARs from 0 to 1: bob.measure's own thresholds."""
    rng = np.random.default_rng(11)
    cases = [
        (np.round(rng.normal(0, 0.3, size), 2).tolist(), far)
        for size in (2, 7, 100, 1000)
        for far in (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.9)
    ]
    read = subprocess.run(
        [BOB_PYTHON, "-c", BOB_THRESHOLDS],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == [far_threshold(np.array(neg), far) for neg, far in cases]
