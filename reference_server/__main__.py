"""``python -m reference_server``: the same as ``rtbench serve`` (reference_server.launch)."""

import sys

from reference_server.launch import main

sys.exit(main())
