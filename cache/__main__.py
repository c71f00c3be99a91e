from cache.cli import main

main()
