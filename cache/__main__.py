from hf_cache.cli import main

main()
