import sys

from cifar.cli import main

sys.exit(main())
