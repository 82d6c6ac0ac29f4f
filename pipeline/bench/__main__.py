"""`python -m pipeline.bench` (`make bench`): the end-to-end bench, pipeline.bench.e2e."""

import sys

from pipeline.bench.e2e import main

sys.exit(main())
