"""Large CPU buffers on transparent huge pages, so each training step does not pay 4 KiB page faults again.

glibc serves big allocations (activations of a CPU step: hundreds of MB) with mmap and returns them to the OS as
soon as they are freed, so the next step faults every 4 KiB page back in; DESIGN.md: "glibc returns large buffers
to the OS after each step, which costs as much as the model itself". ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
makes glibc ask for transparent huge pages on those mappings (512x fewer faults). glibc reads its tunables only at
start-up, so :func:`use_huge_pages` re-executes the script once with the variable set. Keeping freed memory in the
process instead (``mallopt`` thresholds) fragments the heap with batches of varying shape (docs/performance.md).
"""

from __future__ import annotations

import logging
import os
import platform
import sys

logger = logging.getLogger(__name__)

TUNABLE = "glibc.malloc.hugetlb"


def use_huge_pages() -> None:
    """Re-execute the running script with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` added, once. The training
    scripts call it right after parsing their arguments (their ``--huge_pages false`` skips it), before anything
    starts threads, worker processes or torch.distributed. Does nothing off Linux/glibc or where ``GLIBC_TUNABLES``
    already sets ``glibc.malloc.hugetlb`` (``glibc.malloc.hugetlb=0`` opts out too). Same process id, arguments and
    environment otherwise, so launchers (torchrun, accelerate launch) see nothing."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if TUNABLE in tunables:
        return
    os.environ["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}=1" if tunables else f"{TUNABLE}=1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError as error:  # keep going with the defaults: slower, never wrong
        logger.warning("could not restart with %s=1 (%s); continuing with glibc's defaults", TUNABLE, error)
