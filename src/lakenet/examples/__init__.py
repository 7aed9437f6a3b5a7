"""Datasets the project generates (nothing is downloaded) and the experiments that use them: rendered shapes
for transfer learning, templated product reviews for text classification, card transactions (a messy company
table with a rare label), sensor readings with planted faults (anomaly detection), an interaction log with latent
tastes (recommendation) and spoken digits synthesised with espeak-ng (voice); the last three live in their own
modules (sensors, interactions, spoken_digits)."""

from lakenet.examples.reviews import write_reviews_csv
from lakenet.examples.shapes import SOURCE_SHAPES, TARGET_SHAPES, write_shapes_folder
from lakenet.examples.transactions import transactions_frame, write_transactions_csv
from lakenet.examples.transfer import TransferOutcome, run_transfer_example

__all__ = [
    "SOURCE_SHAPES",
    "TARGET_SHAPES",
    "TransferOutcome",
    "run_transfer_example",
    "transactions_frame",
    "write_reviews_csv",
    "write_shapes_folder",
    "write_transactions_csv",
]
