"""Datasets the project generates (nothing is downloaded) and the experiments that use them: rendered shapes
for transfer learning, templated product reviews for text classification, and card transactions (a messy
company table with a rare label)."""

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
