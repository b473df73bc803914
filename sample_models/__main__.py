import sys

from sample_models.build import main

sys.exit(main())
