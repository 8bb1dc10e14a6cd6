"""`python -m fakescope` (so also `torchrun -m fakescope train cfg.yaml`): the `fakescope` command."""

from fakescope.cli import main

if __name__ == "__main__":  # importing the module (pydoc, doctest collection) runs nothing
    main()
