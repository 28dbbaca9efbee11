"""The study's vocabulary, each name written once: editing methods (``methods``), editing
problems (``variants``), tracing kinds (``kinds``), the analysis stage's figures and headline
cell (``analysis``; its tables: :data:`locedit.analysis.tables.TABLE_NAMES`) and the rules that
load a model (``rules``).

Everything else — the workflow's rules and their code hashes, the driver, the API and CLI, the
analysis labels, the config checks at planning — reads these entries, so adding a method is one
:func:`~locedit.registry.methods.register_method` call plus its module. Plain Python (no torch):
the workflow imports it when it is planned, as it does the architecture facts of
:mod:`locedit.adapters`.

One module per vocabulary, and this file imports none of them: a job's code hash covers the
modules it imports (``workflow/rules/common.smk``), so registering a method reruns the edit and
analysis jobs that read the methods, never tracing or the data stage.

Names, not objects, go into config files, paths and tables; labels go into figures and tables.
"""
