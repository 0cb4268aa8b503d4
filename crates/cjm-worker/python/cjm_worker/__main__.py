"""`python -m cjm_worker --fd N --module M --class C`: how a cjm host starts a worker."""

import sys

from cjm_worker._native import serve

raise SystemExit(serve(sys.argv[1:]))
