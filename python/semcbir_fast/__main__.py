"""``python -m semcbir_fast``: the ``semcbir`` command line (see :mod:`semcbir_fast.cli`)."""

from semcbir_fast.cli import main

raise SystemExit(main())
