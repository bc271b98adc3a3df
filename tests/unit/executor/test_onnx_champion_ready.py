"""A served row missing a feature every training row had is not scored: it comes out flat (no entry)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from executor.trader import OnnxChampion
from tradeloom.models.compatibility import ModelCard


class AlwaysUp:
    """A scorer that answers "up" for every row it is given (records what it saw)."""

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.window = card.window
        self.seen: list[npt.NDArray[np.float64]] = []

    def predict_proba(self, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        self.seen.append(rows.copy())
        return np.tile([0.0, 0.0, 1.0], (rows.shape[0], 1))


def _card(window: int, required: tuple[str, ...]) -> ModelCard:
    return ModelCard(name="m", kind="lstm" if window > 1 else "lightgbm", feature_names=("ret_1", "rsi_14_1h",
                     "book_spread"), feature_spec_hash="h", window=window, required_features=required)


def test_a_row_missing_a_required_feature_scores_flat_and_others_score() -> None:
    champion = OnnxChampion(AlwaysUp(_card(1, ("ret_1", "rsi_14_1h"))), "m", "1", 3, 3)
    features = np.array([[0.01, 55.0, np.nan],       # book features never filled: not required, scored
                         [0.01, np.nan, np.nan],     # rsi_14_1h still warming up: not ready
                         [0.02, 40.0, 0.1]])
    probabilities = champion.score(features, np.array([100.0, 100.0, 100.0]))
    assert probabilities[:, 2].tolist() == [1.0, 0.0, 1.0]
    assert probabilities[1].tolist() == [0.0, 1.0, 0.0]
    assert champion.not_ready.tolist() == [False, True, False]


def test_a_sequence_window_not_yet_full_of_required_rows_scores_flat_until_it_is() -> None:
    champion = OnnxChampion(AlwaysUp(_card(3, ("ret_1",))), "m", "1", 1, 3)
    row = np.array([[0.01, 50.0, 0.0]])
    answers = [champion.score(row, np.array([100.0]))[0, 2] for _ in range(4)]
    assert answers == [0.0, 0.0, 1.0, 1.0]  # the window holds three real rows from the third bar on


def test_an_older_card_without_required_features_scores_every_row_as_before() -> None:
    champion = OnnxChampion(AlwaysUp(_card(1, ())), "m", "1", 1, 3)
    assert champion.score(np.array([[np.nan, np.nan, np.nan]]), np.array([100.0]))[0, 2] == 1.0
