"""`python -m app.weights download|convert`: see app/weights/cli.py."""

import sys

from app.weights.cli import main

sys.exit(main())
