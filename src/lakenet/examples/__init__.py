"""Datasets the project generates (nothing is downloaded) and the experiments that use them: rendered shapes
for transfer learning, and templated product reviews for text classification."""

from lakenet.examples.reviews import write_reviews_csv
from lakenet.examples.shapes import SOURCE_SHAPES, TARGET_SHAPES, write_shapes_folder
from lakenet.examples.transfer import TransferOutcome, run_transfer_example

__all__ = [
    "SOURCE_SHAPES",
    "TARGET_SHAPES",
    "TransferOutcome",
    "run_transfer_example",
    "write_reviews_csv",
    "write_shapes_folder",
]
