from kubemr.cli import main

main()
