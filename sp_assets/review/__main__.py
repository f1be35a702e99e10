"""``python -m sp_assets.review``: export a review page, import decisions."""

import sys

from sp_assets.review.cli import main

sys.exit(main())
