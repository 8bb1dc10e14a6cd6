"""`python -m fakescope` (so also `torchrun -m fakescope train cfg.yaml`): the `fakescope` command."""

import ctypes

from fakescope.cli import main


def _forget_caught_interrupt() -> None:
    """Let the status the command chose stand after it caught a Ctrl-C.

    CPython marks a KeyboardInterrupt raised inside `exec` of a string (as `dataclasses` runs at import) as
    unhandled even once caught, and `python -m` then ends by SIGINT whatever the exit status (-2 for 130, or for
    143 after SIGTERM). The command has handled every interrupt once it exits, so the mark is cleared; a no-op on a
    Python that does not export it.
    """
    try:
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (AttributeError, ValueError):
        pass


if __name__ == "__main__":  # importing the module (pydoc, doctest collection) runs nothing
    try:
        main()
    except SystemExit:
        _forget_caught_interrupt()
        raise
