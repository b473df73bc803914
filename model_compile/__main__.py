import sys

from model_compile.cli import main

sys.exit(main())
