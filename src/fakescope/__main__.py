"""`python -m fakescope` (so also `torchrun -m fakescope train cfg.yaml`): the `fakescope` command."""

from fakescope.cli import main

main()
