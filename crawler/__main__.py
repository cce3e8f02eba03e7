from crawler.cli import main

# Guarded: parser processes (forkserver) import the main module again.
if __name__ == "__main__":
    raise SystemExit(main())
