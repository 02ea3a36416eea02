"""``python -m reference_server``: the same as ``rtbench serve`` (reference_server.launch)."""

from reference_server.launch import leave, main

leave(main())
