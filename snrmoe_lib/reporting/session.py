"""What every notebook does first and last: open the run, save figures, write the results file.

A notebook's first code cell after its parameters is::

    run = start_run("q1_snr_headroom", params_path, output_dir)
    p, ds, split = run.params, run.dataset, run.split

and its verdict cell ends with ``run.finish(metrics=..., verdicts=..., extra=...)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from snrmoe_lib.config import Params, load_params
from snrmoe_lib.data.io import PfsDataset, Split, dataset_record, frozen_test_record, require_labels, split_rows
from snrmoe_lib.data.mock import ensure_dataset
from snrmoe_lib.evaluation.predictions import write_predictions
from snrmoe_lib.evaluation.records import write_results
from snrmoe_lib.reporting.plots.common import save_figure

__all__ = ["NotebookRun", "start_run"]


@dataclass
class NotebookRun:
    """One notebook run: validated parameters, the opened dataset, the output folder, figures saved so far."""

    notebook: str
    params: Params
    dataset: PfsDataset
    output_dir: Path
    figures: list[str] = field(default_factory=list)
    _split: Split | None = None

    @property
    def split(self) -> Split:
        """The seeded train/val/test split of the configuration (made on first use).

        Drawn over the dataset's rows, which with ``data.on_bad_rows: drop`` are its kept rows only
        (the bad ones were left out once, when the dataset was opened); the split records how many.
        """
        if self._split is None:
            s = self.params.split
            self._split = split_rows(self.dataset.n, s.n_train, s.n_val, s.n_test, s.seed,
                                     n_dropped=self.dataset.n_dropped)
        return self._split

    def save(self, fig, name: str) -> str:
        """Save ``fig`` as ``<output_dir>/<name>.png`` and list it in the results file."""
        fname = save_figure(fig, self.output_dir, name)
        if fname not in self.figures:
            self.figures.append(fname)
        return fname

    def save_all(self, figures: dict) -> list[str]:
        """Save every figure of ``figures`` (file name → Figure) with :meth:`save`, in order."""
        return [self.save(fig, name) for name, fig in figures.items()]

    def frozen_test(self) -> dict:
        """The configuration's frozen test record (split seed, size, fingerprint of the test stars)."""
        return frozen_test_record(self.dataset, self.split)

    def save_predictions(self, models: dict, rows, y, seeds) -> Path:
        """Write ``<output_dir>/<notebook>_predictions.npz``: every model's per-star test predictions
        (name → (n_seeds, n_test)), keyed by the frozen test's fingerprint (:mod:`snrmoe_lib.evaluation.predictions`)."""
        return write_predictions(self.output_dir, self.notebook, fingerprint=self.frozen_test()["fingerprint"],
                                 rows=rows, y=y, seeds=seeds, models=models)

    def finish(self, metrics: dict, verdicts: list[dict] | None = None, extra: dict | None = None,
               dataset: dict | None = None) -> Path:
        """Write ``<output_dir>/<notebook>.json`` in the results schema and return its path.

        ``dataset`` defaults to the opened dataset's record (with the split when one was used). The
        ``frozen_test`` block records the configuration's test stars (split seed, size, fingerprint)
        whether or not this notebook scored on them, so the Hub can check that a configuration's
        notebooks share one test set.
        """
        record = dataset if dataset is not None else dataset_record(self.dataset, self._split)
        for k, v in (("n_stored", self.dataset.n_stored), ("n_dropped_rows", self.dataset.n_dropped),
                     ("on_bad_rows", self.dataset.on_bad_rows)):
            record.setdefault(k, int(v) if k != "on_bad_rows" else v)  # a notebook's own record says it too
        try:
            frozen = frozen_test_record(self.dataset, self.split, record.get("fingerprint"))
        except ValueError:  # the configuration's split does not fit this dataset: no test set to record
            frozen = None
        return write_results(self.output_dir, self.notebook, self.params, dataset=record, metrics=metrics,
                             verdicts=verdicts, figures=self.figures, extra=extra, frozen_test=frozen)


def start_run(notebook: str, params_path: str | Path, output_dir: str | Path, progress: bool = True,
              display_precision: int | None = None) -> NotebookRun:
    """Validate the parameters, create ``output_dir`` and open (generating if needed) the dataset.

    ``display_precision``: digits pandas shows for floats in the notebook (``display.precision``);
    ``None`` leaves pandas' setting as it is.
    """
    if display_precision is not None:
        import pandas as pd

        pd.set_option("display.precision", int(display_precision))
    params = load_params(params_path)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = require_labels(ensure_dataset(params, progress=progress), params.ridge.target)
    return NotebookRun(notebook, params, ds, out)
