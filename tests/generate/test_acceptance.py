"""Full-size Langevin acceptance (issue 6), ``SYNTHDB_STRESS=1`` only (``make stress``): 128 identities,
20 iterations, stylegan2-tiny + dlib-resnet on the CPU, the reference's Langevin defaults but for
the radius (below).

The repulsion must spread the identities: the minimum and the mean inter-identity angle, and the fraction
of pairs above the ICT, all rise from the initial random latents (stats row 0, taken before the first
update) to the final state (the last row), read from the run's stored stats shards.

The generator is UNTRAINED (its images are not faces), so the dlib embedder sees random identities about
0.29 rad apart on average, not the ~1.4 rad of trained face generators. The ICT and the repulsion radius
are scaled to that: ICT 0.5 rad (else no pair would ever count), r0 0.35 rad (about 1.2x the typical
angle, as the reference's 1.7 is for trained faces). At the reference's r0 = 1.7 every pair repels
about equally, a mean-field push: the mean angle rises (0.29 -> 1.05 rad, pairs above 0.5 rad
0.0002 -> 0.90) but the closest pair is not singled out and the minimum fell (0.163 -> 0.069 rad).
"""

from __future__ import annotations

import os

import pytest

from synthdb.catalog.runs import get_run
from synthdb.context import Context
from synthdb.generate import units
from synthdb.generate.references import LangevinParams, ReferenceParams, generate_references
from synthdb.store.fsck import fsck

TINY_GENERATOR = "stylegan2-tiny"  # untrained: these tests are about the machinery, not faces

pytestmark = pytest.mark.skipif(
    os.environ.get("SYNTHDB_STRESS") != "1", reason="full-size Langevin on the CPU: SYNTHDB_STRESS=1"
)

ICT = 0.5
RADIUS = 0.35


def test_langevin_128_identities_20_iterations_spreads_them(sqlite_ctx: Context) -> None:
    params = ReferenceParams(
        generator=TINY_GENERATOR,
        name="langevin128",
        num_identities=128,
        algorithm="langevin",
        ict=ICT,
        batch_size=32,
        langevin=LangevinParams(iterations=20, repulsion_radius=RADIUS),
    )
    run_id = generate_references(sqlite_ctx, params)
    assert get_run(sqlite_ctx.catalog, run_id).status == "succeeded"
    rows = units.read_stats(sqlite_ctx, run_id)
    assert [row["iteration"] for row in rows] == list(range(21))
    first, last = rows[0], rows[-1]
    print(
        f"\nlangevin 128 x 20: min angle {first['dist_min']:.4f} -> {last['dist_min']:.4f} rad, "
        f"mean {first['dist_avg']:.4f} -> {last['dist_avg']:.4f} rad, "
        f"pairs above ICT {ICT}: {first['prop_ict']:.4f} -> {last['prop_ict']:.4f}"
    )
    assert last["dist_min"] > first["dist_min"]
    assert last["dist_avg"] > first["dist_avg"]
    assert last["prop_ict"] > first["prop_ict"]
    assert fsck(sqlite_ctx.catalog, sqlite_ctx.store).clean
