"""Loader workers start from a fork server, not by forking the training process.

CI once hung for 15 minutes in the V1 demo: at a new epoch, one rank's freshly forked loader worker was stuck
in CPython's after-fork code (a thread of the training process had held an interpreter lock at the moment of
the fork) and the other rank waited in all-reduce. The script below provokes the same race on purpose: two
threads keep starting native threads that call into Python (as gloo, wandb or autograd threads do) while the
main thread starts loader after loader. Plain fork gets stuck within a few hundred loaders (the control);
vislab's loader settings must get through all of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from torch.utils.data import DataLoader, IterableDataset

from vislab.data.pipeline import loader_kwargs

SCRIPT = textwrap.dedent('''
    import ctypes, sys, threading
    from torch.utils.data import DataLoader, IterableDataset
    from vislab.data.pipeline import loader_kwargs

    class Two(IterableDataset):
        def __iter__(self):
            yield from range(2)

    libc = ctypes.CDLL(None)
    CALLBACK = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
    enter_python = CALLBACK(lambda arg: None)  # a native thread that calls Python creates a thread state

    def churn():
        tid = ctypes.c_ulong()
        while True:
            libc.pthread_create(ctypes.byref(tid), None, enter_python, None)
            libc.pthread_join(tid, None)

    if __name__ == "__main__":
        mode, loaders = sys.argv[1], int(sys.argv[2])
        for _ in range(2):
            threading.Thread(target=churn, daemon=True).start()
        kw = loader_kwargs(1, False) if mode == "vislab" else {"batch_size": None, "num_workers": 1}
        for i in range(loaders):
            try:
                assert list(DataLoader(Two(), timeout=5, **kw)) == [0, 1]
            except RuntimeError as e:
                print(f"stuck at loader {i}: {e}")
                sys.exit(3)
        print(f"{loaders} loaders")
''')


def _run(mode: str, loaders: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "churn.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), mode, str(loaders)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a stuck worker of the control must not outlive the test
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_plain_fork_gets_stuck_under_thread_churn(tmp_path: Path) -> None:
    result = _run("fork", 1500, tmp_path)
    assert result.returncode == 3 and "stuck at loader" in result.stdout, (result.stdout, result.stderr[-2000:])


def test_vislab_workers_start_under_thread_churn(tmp_path: Path) -> None:
    result = _run("vislab", 300, tmp_path)
    assert result.returncode == 0 and "300 loaders" in result.stdout, (result.stdout, result.stderr[-2000:])


def test_workers_are_not_children_of_the_training_process() -> None:
    (parent,) = DataLoader(ParentPid(), **loader_kwargs(1, False))
    assert int(parent) != os.getpid()


class ParentPid(IterableDataset):  # type: ignore[type-arg]
    """Yields its worker's parent process id (module level: the worker unpickles it)."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield os.getppid()


def test_the_fork_server_has_no_threads(tmp_path: Path) -> None:
    """Forking from it is only safe while it runs one thread: nothing it imports may start one. (Idle BLAS
    pools hold no interpreter lock; the script caps them at one thread, as Lightning's DDP ranks do, so that
    any thread left over is one the server's imports started.)"""
    script = tmp_path / "server_threads.py"
    script.write_text(textwrap.dedent('''
        import os, sys
        from pathlib import Path
        from torch.utils.data import DataLoader
        from vislab.data.pipeline import loader_kwargs
        sys.path.insert(0, sys.argv[1])
        from test_loader_workers import ParentPid

        if __name__ == "__main__":
            (server,) = DataLoader(ParentPid(), **loader_kwargs(1, False))
            status = Path(f"/proc/{int(server)}/status").read_text()
            print(status.split("Threads:")[1].split()[0])
    '''))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script), str(Path(__file__).parent)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1"], out.stdout
