"""``python -m deploy ...``: the same as the ``xgb-deploy`` console script."""
import sys

from deploy.cli import main

sys.exit(main())
