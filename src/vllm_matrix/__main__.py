import sys

from vllm_matrix.cli import main

sys.exit(main())
