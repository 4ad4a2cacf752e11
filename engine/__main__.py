"""``python -m engine``: see engine/cli/__init__.py."""
import sys

from engine.cli import main

sys.exit(main())
