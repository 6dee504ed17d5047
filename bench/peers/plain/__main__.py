"""python -m bench.peers.plain JOB INPUT OUTPUT WORKERS"""

from bench.peers.plain import main

main()
