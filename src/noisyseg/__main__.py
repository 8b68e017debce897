import os
import sys

from noisyseg.cli import main

code = main()
world_size = os.environ.get("WORLD_SIZE", "")
if code and world_size.isdigit() and int(world_size) > 1:
    # A failed process of a multi-process run (`train --nproc`, torchrun) leaves without the interpreter's
    # teardown: there gloo's threads can abort it once a peer has gone ("terminate called without an active
    # exception", seen once in CI after the agreed error line was printed), which would add a crash report
    # to the one line every process agreed on. Everything the run writes is closed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
