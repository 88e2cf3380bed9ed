"""``spell data build``: turn raw documents into SPELL document sets, as the paper built its corpus (App. E.1).

``read`` streams the inputs, ``filter_pass`` runs the filters (``filters``: length, exact and MinHash-LSH near
duplicates; ``decontam``: overlap with evaluation benchmarks) into an on-disk ``store``, ``features`` and
``cluster`` group the kept documents into sets (TF-IDF or a local embedding model, hierarchical k-means),
``assign`` gives each set a task, ``write`` writes the corpus and the report, and ``build`` runs it all into
an atomically published folder (``spell.corpus.build.build_docsets``). ``cli`` holds the command's arguments.
Importing this package is cheap (the ``spell`` command line imports it for every command); the heavy libraries
(datasketch, scikit-learn, pyarrow; transformers only for ``--tokenizer`` / ``--embed-model``) load with ``build``.
"""

from spell.corpus.options import BuildOptions, DataBuildError

__all__ = ["BuildOptions", "DataBuildError"]
