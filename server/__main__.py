"""`python -m server …` is the `omnistock` command."""

import sys

from server.cli import main

sys.exit(main())
