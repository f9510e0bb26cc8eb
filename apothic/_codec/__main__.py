"""``python -m apothic._codec [--port P] [--ip IP] [--origin URL]``: the codec server."""

import sys

from ._command import main

sys.exit(main())
