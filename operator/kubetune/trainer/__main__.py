import sys

from kubetune.trainer.main import main

sys.exit(main())
