"""`python -m offload ...`: the operators' commands (see offload.durable._cli)."""

from offload.durable._cli import main

raise SystemExit(main())
