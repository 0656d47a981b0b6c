"""`python -m stylecodes`: the same command line as the `stylecodes` script."""

import sys

from stylecodes.cli import main

sys.exit(main())
