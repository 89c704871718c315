"""The parameters of ``synthdb evaluate pairs`` (:class:`EvaluateParams`), one dataclass shared by the API
(:func:`synthdb.analysis.evaluate.evaluate_pairs`) and the command, kept apart from the computation so that
the command line, which builds its options from the field specs (:mod:`synthdb.params`), starts without
importing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthdb.errors import SynthdbError
from synthdb.params import check_fields, param


@dataclass(frozen=True)
class EvaluateParams:
    """Which pairs of ``dataset`` to score with which embedder, how to cross-validate, where to write."""

    dataset: str = param(cli=False, help="The dataset whose pairs are compared.")
    model: str | None = param(None, help="Embedder [default: the dataset's only one].")
    protocol: str | None = param(
        None, help="Protocol whose pairs are compared (lfw: view2) [default: the only one with pairs]."
    )
    group: str | None = param(None, help="Only this group's pairs [default: every group, in name order].")
    pairs_csv: str | None = param(
        None,
        metavar="FILE",
        help="The pairs.csv of a pairs-bin export of DATASET: the .bin's pairs, in its order.",
    )
    folds: int = param(
        10,
        low=2,
        metavar="N",
        help="Cross-validation folds: contiguous runs of the pairs, as insightface splits a .bin (LFW's "
        "View 2 folds, in its order).",
    )
    scores: str | None = param(
        None,
        metavar="FILE",
        help="Write each pair's score (cosine similarity) for bob: FILE.csv in bob's CSV score format, "
        "any other name in its 4-column format.",
    )

    def check(self) -> None:
        """The field specs' ranges (the CLI's rules), then what combines several fields."""
        check_fields(self)
        if self.pairs_csv and (self.protocol or self.group):
            raise SynthdbError("--pairs-csv names the pairs already: drop --protocol and --group")
