"""``python -m loop_modules run ...``: the daemon's CLI, then its process's modules.

Used by test_import_boundary: after the daemon returns, the names in ``sys.modules``
of the Kafka loop's process go to ``$LOOP_MODULES_FILE``, one a line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from stream_learner.cli import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    Path(os.environ["LOOP_MODULES_FILE"]).write_text("\n".join(sorted(sys.modules)))
    sys.exit(code)
