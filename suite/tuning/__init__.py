"""Tuning with an equal, declared budget for every method (`bpsuite tune`).

* `space`: which hyper-parameters a study searches and over what (declared with `param(tune=...)`,
  changed per call with `--space`), checked before any compute.
* `study`: one Optuna study per (method, model, dataset, profile) cell; every trial is a normal
  harness run on a validation split, nested under the study's MLflow run.
* `settings`: the committed file of chosen settings (with provenance) and how experiments apply it.
* `report`: the sensitivity figure and the table of chosen settings.

Nothing here is imported by the harness; `settings` imports no Optuna, so grids can use it freely.
"""
