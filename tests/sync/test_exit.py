"""A threaded program that exits without shutting its node down: the exit hook shuts the
node down (it leaves gossip cleanly) and stops its event loop thread before the
interpreter finalizes. A loop thread left running into finalization crashed such
programs now and then (SIGSEGV: a uvloop timer calling into a finalized interpreter);
this test shows the cause is gone on every run, not only on the unlucky ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(90)

_PROGRAM = """
import atexit, sys, tempfile, threading

def after_copycat_s_hook():  # registered first, so it runs after copycat.sync's
    alive = [t.name for t in threading.enumerate() if t.name.startswith("copycat-sync")]
    print("loop threads alive at exit:", alive, flush=True)

atexit.register(after_copycat_s_hook)

import copycat
import copycat.sync

nodes = [copycat.sync.CopyCat(copycat.Config.local(data_dir=tempfile.mkdtemp()))]
nodes[0].start()
nodes.append(
    copycat.sync.CopyCat(
        copycat.Config.local(
            data_dir=tempfile.mkdtemp(), peers_to_contact=[nodes[0].gossip_address]
        )
    )
)
nodes[1].start()
ds = nodes[0].allocate_data_structure(replicas=2)
sub = nodes[0].subscribe(ds, lambda: b"")
for i in range(5):
    sub.propose(b"v%d" % i)
print("running:", [n.running for n in nodes], flush=True)
# the program ends here without shutdown()
"""


def test_nodes_left_running_are_shut_down_before_the_interpreter_finalizes() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert "running: [True, True]" in done.stdout, done.stdout
    assert "loop threads alive at exit: []" in done.stdout, (done.stdout, done.stderr[-3000:])
    assert "was not shut down; shutting it down at exit" in done.stderr
    # Shut down, not dropped: kinship warns when a node is dropped without leave/close.
    assert "dropped without leave() or close()" not in done.stderr, done.stderr[-3000:]
